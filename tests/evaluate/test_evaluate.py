"""The evaluation stage end to end on a tiny trained model, through lm-eval, offline."""

import json
import os
import subprocess
import sys

import pytest

from aggc.evaluate import sandbox
from aggc.paths import ROOT
from aggc.train import rundir

from ..train._helpers import only_run, train_cli

pytestmark = pytest.mark.slow
FIXTURES = ROOT / "tests" / "fixtures"


def evaluate_cli(*overrides):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "aggc.evaluate", *overrides], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train_cli(root, "strategy=aggc")
    return only_run(root)


def test_gsm8k_records_evaluate_and_resume_from_cache(run):
    """Real GSM8K test records: a result file with every scorer, the generation settings
    and per-sample records; a second call answers every request from the cache."""
    args = (f"run={run}", "eval=gsm8k", f"eval.data={FIXTURES / 'gsm8k_test_sample.jsonl'}", "max_gen_toks=24")
    first = evaluate_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((run / "eval" / "gsm8k.json").read_text())
    assert result["n"] == 2 and [s["target"] for s in result["samples"]] == ["18", "3"]
    assert set(result["scores"]) == {"strict", "flexible", "reference"} and result["score"] == result["scores"]["reference"]
    assert result["generation"]["max_gen_toks"] == 24 and "Question:" in result["generation"]["until"]
    assert result["chat_template"] is False and result["backend"] == "hf" and result["packages"]["lm-eval"]
    assert all(s["response"] is not None for s in result["samples"])

    second = evaluate_cli(*args, "force=true")
    assert second.returncode == 0
    assert "Requests remaining: 0" in second.stdout + second.stderr


def test_a_result_is_redone_for_a_retrained_model_or_other_settings(run):
    """A result names the model it scored and its settings: the same call returns it; after
    the run is retrained in place (a new COMPLETED stamp) the evaluation runs again with a
    cache of its own (no old answers); `eval.limit` is a setting like any other."""
    args = (f"run={run}", "eval=gsm8k", f"eval.data={FIXTURES / 'gsm8k_test_sample.jsonl'}", "max_gen_toks=8")
    assert evaluate_cli(*args).returncode == 0
    first = json.loads((run / "eval" / "gsm8k.json").read_text())
    assert first["model_fingerprint"] == rundir.model_fingerprint(run) and first["eval_settings"]["max_gen_toks"] == 8
    assert first["git_commit"] and isinstance(first["git_dirty"], bool)
    same = evaluate_cli(*args)
    assert "evaluating again" not in same.stdout and json.loads((run / "eval" / "gsm8k.json").read_text()) == first

    rundir.mark_completed(run, {k: v for k, v in json.loads((run / "COMPLETED").read_text()).items()})  # retrained
    again = evaluate_cli(*args)
    assert again.returncode == 0 and "scored another model or other settings; evaluating again" in again.stdout
    redone = json.loads((run / "eval" / "gsm8k.json").read_text())
    assert redone["model_fingerprint"] == rundir.model_fingerprint(run) != first["model_fingerprint"]
    caches = sorted(p.name.split("_rank")[0] for p in (run / "eval" / "cache").glob("gsm8k-*"))  # lm-eval's <name>_rank0.db
    assert caches == sorted(f"gsm8k-{r['model_fingerprint']}" for r in (first, redone)), "one generation cache per model"

    limited = evaluate_cli(*args, "eval.limit=1")
    assert "evaluating again" in limited.stdout and json.loads((run / "eval" / "gsm8k.json").read_text())["n"] == 1


def test_math_records_evaluate_with_three_scorers(run):
    """Real MATH-500 records through the same lm-eval path: each scorer's score is the
    mean of its per-sample verdicts, and the headline is the authors' rule."""
    proc = evaluate_cli(f"run={run}", "eval=math", f"eval.data={FIXTURES / 'math_test_sample.jsonl'}", "max_gen_toks=16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "eval" / "math.json").read_text())
    assert [s["target"] for s in result["samples"]] == ["\\frac{14}{3}", "28", "2000"]
    assert result["samples"][0]["subject"] == "Algebra" and result["prompt"].endswith("{{problem}}\n\n### Response:")
    for scorer in ("strict", "flexible", "reference"):
        verdicts = [s[scorer] for s in result["samples"]]
        assert result["scores"][scorer] == pytest.approx(100 * sum(verdicts) / len(verdicts))
    assert result["score"] == result["scores"]["reference"]


@pytest.mark.parametrize("bench, ids", [("humaneval", ["HumanEval/0", "HumanEval/10", "HumanEval/53"]), ("mbpp", [11, 12, 367])])
def test_code_benchmarks_run_generated_code_in_the_sandbox(run, bench, ids):
    """Real HumanEval / MBPP records, the tiny model's code executed in the sandbox: pass@1
    and the timeout / out-of-memory rates are the means of the per-sample verdicts."""
    proc = evaluate_cli(f"run={run}", f"eval={bench}", f"eval.data={FIXTURES / f'{bench}_sample.jsonl'}", "max_gen_toks=16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "eval" / f"{bench}.json").read_text())
    assert [s["task_id"] for s in result["samples"]] == ids and result["score"] == result["scores"]["pass@1"]
    for score, field in (("pass@1", "code_pass@1"), ("timed_out", "code_timed_out"), ("out_of_memory", "code_out_of_memory")):
        assert result["scores"][score] == pytest.approx(100 * sum(s[field] for s in result["samples"]) / len(ids))
    assert all("code_extracted" in s for s in result["samples"])
    assert result["isolation"] == sandbox.isolation()  # bwrap where it can run here, else guard-only (tables mark it)
    # HumanEval+ / MBPP+ through evalplus where it is installed (not here): the result says whether and why
    assert result["evalplus"]["used"] == ("evalplus_plus" in result["scores"])
    assert result["evalplus"]["used"] or "base tests only" in result["evalplus"]["reason"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("eval=gsm8k", "eval.data=/nonexistent/test.jsonl"), "eval.data=/nonexistent/test.jsonl"),
        (("eval=nosuchbench",), "nosuchbench"),
        (("backend=tgi",), "backend='tgi'"),
    ],
)
def test_bad_input_fails_before_loading_a_model(run, overrides, message):
    proc = evaluate_cli(f"run={run}", *overrides)
    assert proc.returncode != 0 and message in proc.stderr
    assert "Loading weights" not in proc.stderr


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    proc = evaluate_cli(f"run={tmp_path}", "eval=arith")
    assert proc.returncode != 0 and "no final model" in proc.stderr
