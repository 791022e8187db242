"""GLUE evaluation (`eval.kind: glue`): the metrics on predictions whose scores are known by
hand, and `python -m aggc.evaluate run=<dir> eval=glue_<task>` on tiny DeBERTa runs, checked
against the fixture's own labels and an independent, unbatched forward pass."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from aggc.config import ConfigError
from aggc.evaluate import evaluate
from aggc.evaluate.glue import scores
from aggc.paths import CONF_DIR, ROOT
from aggc.train import glue

FIXTURES = ROOT / "tests" / "fixtures" / "glue"


def test_metrics_match_hand_computed_values():
    # CoLA: TP 3, FN 1, TN 3, FP 1 -> MCC = (3*3 - 1*1) / sqrt(4*4*4*4) = 0.5; accuracy 6/8
    y, p = [1, 1, 1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 1, 1, 0]
    assert scores(["mcc", "accuracy"], {"validation": y}, {"validation": p}) == pytest.approx({"mcc": 50.0, "accuracy": 75.0})
    # STS-B: Pearson of (1,2,3,4) and (1,2,3,5) = 6.5 / sqrt(5 * 8.75); Spearman 1 (same order)
    got = scores(["pearson", "spearman"], {"validation": [1.0, 2.0, 3.0, 4.0]}, {"validation": [1.0, 2.0, 3.0, 5.0]})
    assert got == pytest.approx({"pearson": 100 * 6.5 / math.sqrt(43.75), "spearman": 100.0})
    # MRPC: TP 2, FP 1, FN 1 -> F1 = 4 / 6
    assert scores(["f1"], {"validation": [1, 0, 1, 1]}, {"validation": [1, 1, 1, 0]})["f1"] == pytest.approx(200 / 3)
    # MNLI: both dev sets, each its own accuracy
    got = scores(["accuracy"], {"matched": [0, 1, 2, 2], "mismatched": [2, 2]}, {"matched": [0, 1, 2, 0], "mismatched": [2, 1]})
    assert got == {"matched_accuracy": 75.0, "mismatched_accuracy": 50.0}
    with pytest.raises(ConfigError, match="unknown metric"):
        scores(["auc"], {"validation": y}, {"validation": p})


def eval_config(run: Path, bench: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=[f"run={run}", f"eval={bench}", "batch_size=7", *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two optimizer steps of LoRA on SST-2 (classification) and STS-B (regression)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for data in ("glue_sst2_local", "glue_stsb_local"):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[
                "model=tiny_deberta", f"data={data}", "strategy=lora", "train=tiny", f"data.root={FIXTURES}",
                "data.train_file=train_sample.tsv", "data.eval_files.validation=dev_sample.tsv", "data.init_from=null",
                "train.max_steps=2", "train.save_steps=2", "wandb.mode=disabled", f"runs_root={root}"])
        out[data] = glue.run(cfg, root / data)
    return out


def fixture_rows(folder: str, n: int) -> list[dict]:
    with open(FIXTURES / folder / "dev_sample.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]


def one_by_one(final: Path, pairs: list[tuple]) -> list[torch.Tensor]:
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    with torch.no_grad():
        return [model(**tokenizer(*pair, return_tensors="pt")).logits[0] for pair in pairs]


@pytest.mark.slow
def test_classification_result_file(runs):
    run = runs["glue_sst2_local"]
    path = evaluate(eval_config(run, "glue_sst2", "eval.limit=24"))
    assert path == run / "eval" / "glue_sst2.json"
    result = json.loads(path.read_text())
    rows = fixture_rows("SST-2", 24)
    samples = result["samples"]
    assert result["n"] == {"validation": 24} and len(samples) == 24
    assert [s["label"] for s in samples] == [int(r["label"]) for r in rows]
    expected = [int(logits.argmax()) for logits in one_by_one(run / "final", [(r["text"],) for r in rows])]
    assert [s["prediction"] for s in samples] == expected  # batched + padded == one at a time
    accuracy = 100 * sum(s["label"] == s["prediction"] for s in samples) / 24
    assert result["score"] == result["scores"]["accuracy"] == pytest.approx(accuracy)
    assert result["data"] == {"name": "glue_sst2_local", "kind": "tsv", "root": str(FIXTURES), "folder": "SST-2",
                              "eval_files": {"validation": "dev_sample.tsv"}}
    assert result["benchmark"] == "glue_sst2" and "sklearn" in result["scorer"] and result["packages"]["torch"]
    assert result["scored_model"] == "final model (train.select_best=last)"  # train=tiny


@pytest.mark.slow
def test_regression_result_file(runs):
    run = runs["glue_stsb_local"]
    result = json.loads(evaluate(eval_config(run, "glue_stsb")).read_text())
    rows = fixture_rows("STS-B", 40)
    samples = result["samples"]
    assert [s["label"] for s in samples] == [float(r["score"]) for r in rows]
    expected = [float(logits[0]) for logits in one_by_one(run / "final", [(r["sentence1"], r["sentence2"]) for r in rows[:5]])]
    assert [s["prediction"] for s in samples[:5]] == pytest.approx(expected, abs=1e-5)
    y, p = torch.tensor([s["label"] for s in samples]), torch.tensor([s["prediction"] for s in samples])
    pearson = float(torch.corrcoef(torch.stack([y, p]))[0, 1])
    assert result["score"] == result["scores"]["pearson"] == pytest.approx(100 * pearson, rel=1e-4)
    assert set(result["scores"]) == {"pearson", "spearman"}
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1  # one output, MSE


@pytest.mark.parametrize("bench, overrides, message", [
    ("glue_rte", [], "trained on 'sst2'"),
    ("glue_sst2", ["eval.score=mcc"], "eval.score='mcc'"),
    ("glue_sst2", ["eval.metrics=[auroc]", "eval.score=auroc"], "metrics must be of"),
])
def test_bad_input_fails_before_a_model_is_loaded(runs, bench, overrides, message, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", no_model)
    with pytest.raises(ConfigError, match=message):
        evaluate(eval_config(runs["glue_sst2_local"], bench, *overrides))


def test_every_glue_benchmark_names_a_score_of_its_task():
    """The eight eval configs compose, and each headline is among the scores its task's dev
    sets produce (MNLI: matched and mismatched)."""
    from aggc.data.glue import split_names
    from aggc.evaluate.glue import score_name

    for task in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            ev = compose("evaluate", overrides=["run=x", f"eval=glue_{task}"]).eval
            data = compose("config", overrides=[f"data=glue_{task}"]).data
        assert ev.task == data.task == task
        names = [score_name(s, m) for s in split_names(data) for m in ev.metrics]
        assert ev.score in names, task
        if task == "mnli":
            assert names == ["matched_accuracy", "mismatched_accuracy"]
