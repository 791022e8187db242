"""The console a person reads (aggc.train.console): one progress bar, no dict per step, and a
summary at the end with each group's median factor, shares clipped down / raised and
non-finite steps."""

import io

import pytest
from tqdm import tqdm
from transformers import TrainerState

from aggc.train.console import StepProgress, summary

from ._helpers import only_run, train_cli


def records(factors_by_step, nonfinite=()):
    return [{"step": i, "loss": 2.0 - 0.1 * i, "factors": f, "skipped": i in nonfinite,
             "nonfinite_groups": ["v"] if i in nonfinite else []} for i, f in enumerate(factors_by_step)]


def test_summary_counts_what_the_clipper_did_per_group():
    log = records([{"q": 0.5, "v": 1.0}, {"q": 0.8, "v": 2.0}, {"q": 1.5, "v": None}, {"q": 1.0, "v": 1.0}], nonfinite=(2,))
    text = summary(log, 90, "runs/x/seed0")
    lines = text.splitlines()
    assert lines[0] == "trained 4 steps in 1.5 min; final loss 1.7 (mean 1.85); 1 steps skipped"
    q = lines[2].split()
    assert q == ["q", "0.9", "50%", "25%", "0"]  # median of 0.5, 0.8, 1.5, 1.0; two of four down, one raised
    v = lines[3].split()
    assert v == ["v", "1", "0%", "33%", "1"]  # the non-finite step has no factor and is counted apart
    assert lines[-1] == "run directory: runs/x/seed0"


def test_progress_shows_the_loss_on_the_bar_and_writes_only_evaluations(capsys):
    out = io.StringIO()
    progress = StepProgress()
    progress.training_bar = tqdm(total=3, file=out)
    state = TrainerState()
    state.global_step = 1
    progress.on_log(None, state, None, logs={"loss": 1.23456, "learning_rate": 1e-3, "epoch": 0.1})
    assert progress.training_bar.postfix == "loss=1.235" and "loss" not in capsys.readouterr().out + out.getvalue()
    progress.on_log(None, state, None, logs={"eval_accuracy": 0.75, "eval_loss": 0.5})
    assert "step 1: eval_accuracy 0.75, eval_loss 0.5" in capsys.readouterr().out


@pytest.mark.slow
def test_a_training_run_prints_one_bar_and_a_summary(tmp_path):
    proc = train_cli(tmp_path)
    run = only_run(tmp_path)
    console = proc.stdout + proc.stderr
    assert f"run directory: {run}" in proc.stdout.splitlines()[0]
    assert "trained 6 steps in" in proc.stdout and "median factor  clipped down  raised  non-finite steps" in proc.stdout
    assert all(f"\n{g} " in proc.stdout for g in ("q_proj", "down_proj"))
    assert "{'loss'" not in console and "Writing model shards" not in console and "Loading weights" not in console
