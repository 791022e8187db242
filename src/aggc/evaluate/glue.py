"""GLUE dev-set evaluation of a run's final classifier (`eval.kind: glue`).

The dev split comes from the run's own data spec (its `config.yaml`), so a run trained on
the hub's task is scored on the hub's dev set and a run trained on the shipped TSVs on
theirs. Metrics are scikit-learn's and scipy's, in percent (as the paper prints them):
CoLA Matthews correlation, STS-B Pearson (and Spearman), accuracy elsewhere (+ F1 for MRPC
and QQP), MNLI on both dev sets (matched, mismatched).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from scipy import stats
from sklearn import metrics as skm

from ..config import ConfigError
from ..data import glue as glue_data
from ..train.rundir import read_json

METRICS = {
    "accuracy": lambda y, p: skm.accuracy_score(y, p),
    "f1": lambda y, p: skm.f1_score(y, p),
    "mcc": lambda y, p: skm.matthews_corrcoef(y, p),
    "pearson": lambda y, p: stats.pearsonr(y, p)[0],
    "spearman": lambda y, p: stats.spearmanr(y, p)[0],
}


SOURCE_KEYS = {"hub": ("hub_id", "subset", "eval_splits"), "tsv": ("root", "folder", "eval_files")}


def score_name(split: str, metric: str) -> str:
    """`mcc` for a task's one dev set; `matched_accuracy`, `mismatched_accuracy` for MNLI's two."""
    return metric if split == "validation" else f"{split}_{metric}"


def score_names(spec: dict, metrics) -> dict[str, tuple[str, str]]:
    """Every score a task's dev sets give with `metrics`: name -> (split, metric)."""
    return {score_name(split, metric): (split, metric) for split in glue_data.split_names(spec) for metric in metrics}


def predicted(logits, regression: bool):
    """The prediction per row of a batch's logits (torch or numpy): the one output of a
    regression head (STS-B), else the arg-max class."""
    return logits[:, 0] if regression else logits.argmax(-1)


def scores(metrics: list[str], labels: dict[str, list], predictions: dict[str, list]) -> dict[str, float]:
    """Every metric on every split, x100."""
    out = {}
    for split in labels:
        for metric in metrics:
            if metric not in METRICS:
                raise ConfigError(f"eval.metrics: unknown metric {metric!r}; known: {', '.join(METRICS)}")
            out[score_name(split, metric)] = 100 * float(METRICS[metric](labels[split], predictions[split]))
    return out


def check_inputs(cfg: DictConfig, run: Path) -> dict:
    """The run's data spec, after checking that the run is a GLUE run of this task and
    that its dev files exist (before any model is loaded)."""
    run_cfg = OmegaConf.load(run / "config.yaml")
    if run_cfg.model.get("task") != "seq_cls" or "task" not in run_cfg.data:
        raise ConfigError(f"eval={cfg.eval.name}: run={run} is not a GLUE run (model.task={run_cfg.model.get('task')}, "
                          f"data={run_cfg.data.name})")
    if run_cfg.data.task != cfg.eval.task:
        raise ConfigError(f"eval={cfg.eval.name} scores GLUE task {cfg.eval.task!r}, but run={run} was trained on "
                          f"{run_cfg.data.task!r} (data={run_cfg.data.name}); use eval=glue_{run_cfg.data.task}")
    spec = OmegaConf.to_container(run_cfg.data, resolve=True)
    unknown = [m for m in cfg.eval.metrics if m not in METRICS]
    names = list(score_names(spec, cfg.eval.metrics))
    if unknown or cfg.eval.score not in names:
        raise ConfigError(f"eval.metrics={list(cfg.eval.metrics)} / eval.score={cfg.eval.score!r}: metrics must be of "
                          f"{', '.join(METRICS)}, and the score one of {', '.join(names)}")
    glue_data.check_source(spec, train=False)
    return spec


def predict(model, tokenizer, records: list[dict], max_length: int, batch_size: int, regression: bool) -> list:
    import torch
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    encoded = glue_data.encode(records, tokenizer, max_length)
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(records), batch_size):
            batch = collate([{"input_ids": ids, "attention_mask": mask} for ids, mask in
                             zip(encoded["input_ids"][i:i + batch_size], encoded["attention_mask"][i:i + batch_size])])
            logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits.float().cpu()
            out += predicted(logits, regression).tolist()
    return out


def scored_model(run: Path) -> str:
    """Which model `final/` is: the best epoch under train.select_best=epoch, else the end
    of training."""
    selection = read_json(run / "manifest.json").get("selection")
    if not selection:
        return "final model (train.select_best=last)"
    if selection["best_epoch"] is None:
        return f"final model: no epoch scored on dev {selection['metric']}"
    return f"best epoch on dev {selection['metric']}: {selection['best_epoch']} of {selection['num_train_epochs']}"


def evaluate_glue(cfg: DictConfig, run: Path, final: Path) -> dict:
    spec = check_inputs(cfg, run)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from . import eval_device, eval_dtype

    model = AutoModelForSequenceClassification.from_pretrained(final, dtype=getattr(torch, eval_dtype(cfg))).to(eval_device(cfg))
    tokenizer = AutoTokenizer.from_pretrained(final)
    regression = glue_data.is_regression(spec)
    labels, predictions, samples = {}, {}, []
    for split in glue_data.split_names(spec):
        records = glue_data.load_split(spec, split, cfg.eval.limit)
        labels[split] = [r["label"] for r in records]
        predictions[split] = predict(model, tokenizer, records, spec["max_length"], cfg.batch_size, regression)
        samples += [{"split": split, "index": i, "label": y, "prediction": p}
                    for i, (y, p) in enumerate(zip(labels[split], predictions[split]))]
    result = scores(list(cfg.eval.metrics), labels, predictions)
    return {
        "scored_model": scored_model(run),
        "score": result[cfg.eval.score],
        "scorer": cfg.eval.scorer,
        "scores": result,
        "n": {split: len(y) for split, y in labels.items()},
        "data": {k: spec[k] for k in ("name", "kind", *SOURCE_KEYS[spec["kind"]])},
        "max_length": spec["max_length"],
        "samples": samples,
    }
