"""GLUE (Table 2): sequence classification with the HF Trainer. Full FT, BitFit, LoRA,
DoRA and AGGC (LoRA + clip=aggc) on DeBERTa (`model.task: seq_cls`).

The run life cycle is the one every trainer shares (`session`: run directory, resume,
clip callback, final model, COMPLETED); only the data, the model head and the
initialisation are GLUE's. `data.init_from: glue_mnli` (STS-B, RTE, MRPC in the paper)
starts the backbone from the same model / strategy / clip / seed's MNLI run (its
`final/`, adapters merged) with a new task head (`model.head_modules`); that run must be
COMPLETED, or this one refuses to start.

`train.select_best: epoch` (train=paper_glue) is the LoRA codebase's protocol, which the
paper says it used: score the dev set after every epoch and keep the best epoch's weights
as `final/` (the Trainer's load_best_model_at_end), so the evaluation stage reports the
best epoch. It selects on the set it reports, as that codebase does; `last` scores the
final epoch. Checkpoints are then saved per epoch, so a crash loses at most one epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

from ..config import ConfigError, check_hardware, validate
from ..data import glue as glue_data
from ..evaluate.glue import predicted, score_names, scores
from ..identity import find_runs, identity
from ..models import load_classifier_and_tokenizer
from ..paths import CONF_DIR
from . import rundir
from .session import HarnessTrainer, finish_run, open_run, trainer_arguments
from .strategy import apply_strategy, in_modules

log = logging.getLogger(__name__)


class GLUETrainer(HarnessTrainer, Trainer):
    """The HF Trainer with the harness's two corrections (`session.HarnessTrainer`)."""


def check_predecessor(cfg: DictConfig) -> Path | None:
    """The run this one starts from (`data.init_from`): the COMPLETED run of the same model,
    strategy, clip and seed on that task (`<runs_root>/<model>/<init_from>/<strategy>-<clip>-
    <cell id>/seed<N>`); where several configurations of it exist, the one whose model,
    strategy and clip settings equal this run's. None without init_from."""
    source = cfg.data.get("init_from")
    if not source:
        return None
    done = [r for r in find_runs(cfg.runs_root, cfg.model.name, source, cfg.strategy.name, cfg.clip.name, cfg.seed)
            if rundir.is_completed(r) and (r / "final").is_dir()]
    if len(done) > 1:  # the one trained like this run (all but the task), else the one of this model, strategy, clip
        mine = identity(cfg)
        theirs = {r: identity(OmegaConf.to_container(OmegaConf.load(r / "config.yaml"))) for r in done}
        for keys in ([k for k in mine if k != "data"], ["model", "strategy", "clip"]):
            matching = [r for r in done if all(theirs[r].get(k) == mine.get(k) for k in keys)]
            if matching:
                done = matching
                break
    if len(done) == 1:
        return done[0]
    train = (f"python -m aggc.train model={cfg.model.name} data={source} strategy={cfg.strategy.name} clip={cfg.clip.name} "
             f"seed={cfg.seed} runs_root={cfg.runs_root}")
    if not done:
        raise ConfigError(f"data.init_from={source}: this run starts from the COMPLETED {source} run of the same model, "
                          f"strategy, clip and seed under {cfg.runs_root}, and there is none. Train it first: {train} "
                          "(or set data.init_from=null)")
    raise ConfigError(f"data.init_from={source}: {len(done)} COMPLETED {source} runs could be this run's start: "
                      f"{', '.join(map(str, done))}; keep one")


def load_model(cfg: DictConfig, predecessor: Path | None):
    """The classifier to train: the base model with a new head (seeded), its backbone
    replaced by the predecessor's final weights when the task starts from another run."""
    labels = cfg.data.get("label_names")
    model, tokenizer = load_classifier_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir),
                                                     cfg.data.num_labels, list(labels) if labels else None)
    if predecessor is not None:
        load_backbone(model, predecessor / "final", list(cfg.model.head_modules))
    return model, tokenizer


def load_backbone(model, final: Path, head_modules: list[str]) -> None:
    """Copy every weight of `final` but the head's into `model` (strict on the rest)."""
    files = sorted(final.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{final}: no safetensors weights")
    state = {k: v for f in files for k, v in load_file(f).items() if not in_modules(k, head_modules)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not in_modules(k, head_modules)]
    if missing or unexpected:
        raise RuntimeError(f"{final} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    log.info("backbone from %s (%d tensors); new head %s", final, len(state), head_modules)


def headline_score(spec: dict) -> tuple[str, str, str]:
    """(dev split, metric, score name) of the number the tables print for this task: the
    `score` of its evaluation config (conf/eval/glue_<task>.yaml), so training selects on
    what evaluation reports."""
    eval_cfg = OmegaConf.load(CONF_DIR / "eval" / f"glue_{spec['task']}.yaml")
    names = score_names(spec, eval_cfg.metrics)
    if eval_cfg.score in names:
        return *names[eval_cfg.score], eval_cfg.score
    raise ConfigError(f"conf/eval/glue_{spec['task']}.yaml: score {eval_cfg.score!r} is no split's metric of data={spec['name']}")


def best_epoch_arguments(spec: dict, headline: tuple[str, str, str], tokenizer, eval_batch_size: int) -> tuple[dict, dict]:
    """Trainer keywords that score the headline metric on its dev split after every epoch
    and load the best epoch's checkpoint at the end."""
    split, metric, score = headline
    regression = glue_data.is_regression(spec)

    def compute_metrics(prediction) -> dict[str, float]:
        rows = predicted(prediction.predictions, regression)
        return scores([metric], {split: prediction.label_ids.tolist()}, {split: rows.tolist()})

    dev = glue_data.encoded_split(spec, split, tokenizer)
    arguments = dict(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                     metric_for_best_model=score, greater_is_better=True,
                     per_device_eval_batch_size=eval_batch_size)
    return arguments, dict(eval_dataset=dev, compute_metrics=compute_metrics)


def record_selection(run_dir: Path, state, score: str, num_train_epochs: int) -> None:
    """The dev score of every epoch and the one kept, in the manifest. No epoch is kept
    when none ever scored (a NaN score: Pearson of constant predictions); final/ is then
    the last epoch."""
    key = f"eval_{score}"
    epochs = [{"epoch": round(e["epoch"]), "step": e["step"], score: e[key]} for e in state.log_history if key in e]
    best = Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None
    best_epoch = next((e["epoch"] for e in epochs if best == f"checkpoint-{e['step']}"), None)
    rundir.update_manifest(run_dir, selection={
        "metric": score, "epochs": epochs, "num_train_epochs": num_train_epochs, "best_epoch": best_epoch,
        "best_checkpoint": best, "best": state.best_metric if best else None})


def run(cfg: DictConfig, run_dir: Path) -> Path:
    """Train one GLUE cell into `run_dir`; resume from its last whole checkpoint if any."""
    clip = validate(cfg)
    check_hardware(cfg, torch.cuda.is_available())
    if cfg.model.task != "seq_cls":
        raise ConfigError(f"model.task={cfg.model.task!r}: the GLUE stage trains sequence classifiers (model.task=seq_cls)")
    if "task" not in cfg.data:
        raise ConfigError(f"data={cfg.data.name}: not a GLUE task (a data config with `task`, e.g. data=glue_cola)")
    if not cfg.strategy.get("trains", True):
        raise ConfigError(f"strategy={cfg.strategy.name}: an untrained classification head scores chance; not a GLUE run")
    run_dir = Path(run_dir)
    if rundir.is_completed(run_dir):
        log.info("%s is COMPLETED; nothing to do", run_dir)
        return run_dir
    data_spec = OmegaConf.to_container(cfg.data, resolve=True)
    glue_data.check_source(data_spec)
    predecessor = check_predecessor(cfg)
    headline = headline_score(data_spec) if cfg.train.get("select_best", "last") == "epoch" else None

    session = open_run(cfg, run_dir, clip)
    if session.main_process and predecessor is not None:
        rundir.update_manifest(run_dir, init_from=str(predecessor))

    set_seed(cfg.seed)
    model, tokenizer = load_model(cfg, predecessor)
    model = apply_strategy(model, cfg.strategy, task_type="SEQ_CLS", head_modules=list(cfg.model.head_modules))
    dataset = glue_data.encoded_split(data_spec, "train", tokenizer, data_spec.get("limit"))
    arguments, evaluation = trainer_arguments(cfg, session.checkpoints), {}
    if headline:
        more_arguments, evaluation = best_epoch_arguments(data_spec, headline, tokenizer, cfg.train.per_device_train_batch_size)
        arguments.update(more_arguments)

    trainer = GLUETrainer(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[session.callback],
        **evaluation,
    )
    # DeBERTa's forward takes **kwargs, so the Trainer would take its loss for one already
    # normalised over the accumulation window and the processes: it would skip the division
    # by gradient_accumulation_steps and multiply by the world size. Its loss is a plain
    # micro-batch mean, so the clipper would see ga x world times the gradient.
    trainer.model_accepts_loss_kwargs = False
    session.train(trainer)
    if headline and session.main_process:
        record_selection(run_dir, trainer.state, headline[2], cfg.train.num_train_epochs)
    finish_run(session, trainer, tokenizer)
    return run_dir
