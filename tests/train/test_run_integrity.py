"""A run directory holds exactly what it trained: one configuration (its identity), one
writer at a time, every process that trained it on record, and a resume that survives a
torn checkpoint or log line."""

import hashlib
import json
import logging
import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from aggc.config import ConfigError
from aggc.identity import cell_id, run_dir
from aggc.paths import CONF_DIR
from aggc.train import rundir
from aggc.train.rundir import CLIPPER_STATE, MetricsLog, last_checkpoint, mark_whole, read_metrics

from ._helpers import SMOKE, only_run, train_cli


def snapshot(run) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}


def composed(*overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*SMOKE, *overrides])


def compose_default():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["model=tiny_llama", "data=arith"])


def test_identity_ignores_where_and_how_and_sees_every_setting(tmp_path):
    """runs_root, cache_dir, wandb and the seed leave the cell id alone; any setting that
    can change the result (a clip key, the train recipe, the experiment) changes it."""
    base = cell_id(composed())
    assert cell_id(composed(f"runs_root={tmp_path}", f"cache_dir={tmp_path}", "wandb.mode=disabled", "seed=3")) == base
    for override in ("clip.beta=0.5", "train.learning_rate=1e-4", "strategy=lora", "data.train_size=65"):
        assert cell_id(composed(override)) != base, override
    assert cell_id(composed()) != cell_id(compose_default()), "experiment=smoke is another run than the default"
    assert run_dir(composed(f"runs_root={tmp_path}", "seed=2")) == tmp_path / "tiny_llama" / "arith" / f"aggc-aggc-{base}" / "seed2"


@pytest.mark.slow
def test_a_changed_setting_trains_a_new_run_and_leaves_the_first_as_it_was(tmp_path):
    train_cli(tmp_path)
    first = only_run(tmp_path)
    before = snapshot(first)
    again = train_cli(tmp_path, "clip.beta=0.5")
    runs = rundir.find_runs(tmp_path, "tiny_llama", "arith", "aggc", "aggc", 0)
    assert len(runs) == 2 and "COMPLETED; nothing to do" not in again.stdout + again.stderr
    assert snapshot(first) == before, "the first run's files are byte for byte as they were"
    # the same settings again: the first run, done
    same = train_cli(tmp_path)
    assert "COMPLETED; nothing to do" in same.stdout + same.stderr and snapshot(first) == before


@pytest.mark.slow
def test_a_directory_holding_another_configuration_is_refused_and_left_alone(tmp_path):
    """Pointing a command with other settings at a run's directory (hydra.run.dir) neither
    resumes nor reports it done, and writes nothing into it."""
    train_cli(tmp_path)
    run = only_run(tmp_path)
    before = snapshot(run)
    proc = train_cli(tmp_path, f"hydra.run.dir={run}", "clip.beta=0.5", "train.learning_rate=1e-4", check=False)
    assert proc.returncode != 0 and "holds another configuration" in proc.stderr and "clip.beta: 0.95 -> 0.5" in proc.stderr
    assert snapshot(run) == before
    with pytest.raises(ConfigError, match="holds another configuration"):
        rundir.check_same_run(run, composed(f"runs_root={tmp_path}", "clip.beta=0.5"))


@pytest.mark.slow
def test_two_concurrent_starts_make_one_run(tmp_path):
    """The same command started twice at once: the second waits for the first (saying who
    holds the run), then finds it COMPLETED; one record per step, no traceback in either."""
    steps = ("train.max_steps=12", "train.save_steps=4")
    first = train_cli(tmp_path, *steps, wait=False)
    time.sleep(1.0)
    second = train_cli(tmp_path, *steps, wait=False)
    errors = [p.communicate(timeout=900)[1] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [e[-2000:] for e in errors]
    run = only_run(tmp_path)
    assert rundir.is_completed(run)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(12))
    assert not any("Traceback" in e for e in errors)
    assert any(f"{run} is in use by pid" in e for e in errors), "the waiting start names the holder"
    assert len(rundir.read_json(run / "manifest.json")["starts"]) == 1, "the second start trained nothing"


@pytest.mark.slow
def test_totals_span_every_process_and_each_restart_is_on_record(tmp_path):
    """A COMPLETED removed and the command run again (a restart with nothing left to train,
    as after a crash between the last checkpoint and COMPLETED) trains no step past the
    end, keeps the loss over all steps and the time of every process, and records the restart."""
    train_cli(tmp_path)
    run = only_run(tmp_path)
    done = json.loads((run / "COMPLETED").read_text())
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    assert done["train_loss"] == pytest.approx(sum(losses) / len(losses)) and done["processes"] == 1
    (run / "COMPLETED").unlink()
    train_cli(tmp_path)
    again = json.loads((run / "COMPLETED").read_text())
    assert again["global_step"] == 6 and [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(6))
    assert again["train_loss"] == pytest.approx(done["train_loss"]) and again["processes"] == 2
    assert again["train_seconds"] >= done["train_seconds"]
    starts = rundir.read_json(run / "manifest.json")["starts"]
    assert [s["resumed_from"] for s in starts] == [None, "checkpoint-6"]
    assert all(s["git_commit"] and isinstance(s["git_dirty"], bool) and s["host"] for s in starts)


def fake_checkpoint(root, step):
    checkpoint = root / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    save_file({"w": torch.ones(64)}, checkpoint / "model.safetensors")
    (checkpoint / "trainer_state.json").write_text("{}")
    torch.save({"step": step}, checkpoint / CLIPPER_STATE)
    mark_whole(checkpoint)
    return checkpoint


@pytest.mark.parametrize("damage", ["truncated", "no marker", "no clipper state"])
def test_a_checkpoint_that_is_not_whole_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    older, newest = fake_checkpoint(tmp_path, 3), fake_checkpoint(tmp_path, 6)
    if damage == "truncated":  # a full disk or a kill mid-copy
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "no marker":  # killed before the save finished
        (newest / rundir.WHOLE).unlink()
    else:
        (newest / CLIPPER_STATE).unlink()
    with caplog.at_level(logging.WARNING, logger="aggc.train.rundir"):
        assert last_checkpoint(tmp_path) == older
    assert f"{newest} is not a whole checkpoint" in caplog.text


def test_a_torn_last_log_line_is_dropped_and_a_bad_line_elsewhere_is_named(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0}) + "\n" + json.dumps({"step": 1}) + "\n" + '{"step": 2, "nor')
    with caplog.at_level(logging.WARNING, logger="aggc.train.rundir"):
        assert [r["step"] for r in read_metrics(path)] == [0, 1]
    assert "line 3 is torn" in caplog.text
    log = MetricsLog(path, resume_step=2)  # resuming over the torn line
    log.write({"step": 2})
    log.close()
    assert [r["step"] for r in read_metrics(path)] == [0, 1, 2]
    path.write_text(json.dumps({"step": 0}) + "\n" + "garbage\n" + json.dumps({"step": 2}) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON record"):
        read_metrics(path)
