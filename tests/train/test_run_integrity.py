"""A run directory holds exactly what it trained: one configuration (its identity), one
writer at a time, every process that trained it on record, and a resume that survives a
torn checkpoint or log line."""

import hashlib
import json
import logging
import os
import subprocess
import sys
import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from aggc.config import ConfigError
from aggc.identity import cell_id, find_runs, run_dir
from aggc.paths import CONF_DIR, ROOT
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
    runs = find_runs(tmp_path, "tiny_llama", "arith", "aggc", "aggc", 0)
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


@pytest.mark.slow
@pytest.mark.distributed
def test_a_distributed_start_on_a_held_run_waits_and_ends_with_it(tmp_path):
    """A 2-process torchrun started while a single process trains the same run: its rank 0
    waits for the lock, and its rank 1 follows its rank 0 (it must not build a trainer and
    wait in a collective that never comes); both find the run COMPLETED and exit."""
    steps = ("train.max_steps=160", "train.save_steps=80")  # long enough to be held while torchrun starts
    first = train_cli(tmp_path, *steps, wait=False)
    holder = run_dir(composed(f"runs_root={tmp_path}", *steps)).with_name("seed0.lock.holder")
    deadline = time.time() + 300
    while not holder.exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "aggc.train", *SMOKE, f"runs_root={tmp_path}", *steps],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    first.communicate(timeout=900)
    assert first.returncode == 0 and ddp.returncode == 0, ddp.stderr[-3000:]
    run = only_run(tmp_path)
    assert "is in use by pid" in ddp.stderr and (ddp.stdout + ddp.stderr).count("COMPLETED; nothing to do") == 2
    assert len(rundir.read_json(run / "manifest.json")["starts"]) == 1


@pytest.mark.parametrize("global_batch, why", [(None, "the global batch, so the run, would change midway"),
                                                (8, r"its global batch \(train.global_batch_size\) would stay, but")])
def test_a_run_resumes_only_with_the_processes_it_was_trained_by(tmp_path, monkeypatch, global_batch, why):
    """A run checkpointed by 2 processes is not resumed by 1: without train.global_batch_size its
    global batch would change; with it the batch stays (the accumulation is recomputed), but the
    checkpoint's per-process state does not fit another process count, and the error says which."""
    from aggc.config import clip_config
    from aggc.train.session import open_run

    batch = [] if global_batch is None else [f"+train.global_batch_size={global_batch}", "train.gradient_accumulation_steps=null"]
    cfg = composed(f"runs_root={tmp_path}", *batch)
    run = run_dir(cfg)
    fake_checkpoint(run / "checkpoints", 3)
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(json.dumps({"world_size": 2, "starts": []}))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=f"trained by 2 process.*would resume with 1: {why}"):
        open_run(cfg, run, clip_config(cfg))


def test_a_runs_peak_memory_is_its_largest_process():
    """A requeued run's last process may train nothing: the run's peak is the largest."""
    starts = [{"peak_rss_mb": 900.0, "peak_gpu_memory_mb": 40000.0}, {"peak_rss_mb": 500.0, "peak_gpu_memory_mb": 3000.0}]
    assert rundir.run_peak_memory(starts) == {"peak_gpu_memory_mb": 40000.0, "peak_rss_mb": 900.0}
