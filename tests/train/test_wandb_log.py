"""wandb carries the clipping (aggc.train.wandb_log): a real offline run, read back from the
files wandb writes, holds every group's clip series and the run's config; a killed and
resumed run continues the same wandb run without logging a step twice."""

import json
import shutil
import signal
import struct
import time

import pytest

from aggc.identity import run_dir
from aggc.train import rundir
from aggc.train.wandb_log import CLIP_FIELDS, wandb_row

from ._helpers import config, train_cli

MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def wandb_records(path):
    """The protobuf records of an offline run's `.wandb` file (LevelDB log format: 32 KiB
    blocks of chunks with a 7-byte header, after wandb's 7-byte file header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        chunks = payload if kind in (1, 2) else chunks + payload  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            yield record


def offline_runs(run):
    """Each offline run folder's (run id, config, history rows by step), oldest first."""
    out = []
    for folder in sorted((run / "wandb").glob("offline-run-*")):
        run_id, cfg, rows = None, {}, {}
        for r in wandb_records(next(folder.glob("run-*.wandb"))):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run_id = r.run.run_id
                cfg.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
            elif kind == "config":
                cfg.update({u.key: json.loads(u.value_json) for u in r.config.update})
            elif kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                assert row["_step"] not in rows, f"step {row['_step']} logged twice in {folder.name}"
                rows[row["_step"]] = row
        out.append((run_id, cfg, rows))
    return out


def test_a_record_becomes_per_group_panels_and_non_finite_values_stay_out():
    record = {"step": 3, "loss": 1.5, "lr": 1e-3, "grad_norm": None, "skipped": False, "nonfinite_groups": ["v_proj"],
              **{field: {"q_proj": 0.5, "v_proj": float("nan") if field == "norms" else None} for field in CLIP_FIELDS}}
    row = wandb_row(record)
    assert {f"clip/q_proj/{name}" for name in CLIP_FIELDS.values()} <= set(row)
    assert not any(k.startswith("clip/v_proj/") for k in row) and "train/grad_norm" not in row
    assert row["train/loss"] == 1.5 and row["train/nonfinite_groups"] == 1 and row["train/skipped"] == 0


@pytest.mark.slow
def test_offline_run_holds_clip_series_and_a_killed_run_resumes_the_same_wandb_run(tmp_path):
    overrides = ("train.max_steps=12", "train.save_steps=3", "train.save_total_limit=10", "wandb.mode=offline")
    proc = train_cli(tmp_path, *overrides, wait=False)
    run = run_dir(config(*overrides, f"runs_root={tmp_path}"))
    deadline = time.time() + 300
    metrics = run / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 8):  # killed mid-run, past checkpoint 6
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "COMPLETED").exists(), "the kill must land before the run ends"
    for checkpoint in (run / "checkpoints").glob("checkpoint-*"):  # resume from step 6: steps 6.. are trained again
        if rundir.checkpoint_step(checkpoint) > 6:
            shutil.rmtree(checkpoint)

    train_cli(tmp_path, *overrides)
    assert (run / "COMPLETED").exists()
    runs = offline_runs(run)
    state = json.loads((run / "wandb.json").read_text())
    assert len(runs) == 2 and runs[1][0] == state["id"] and runs[0][0] in (None, state["id"]), \
        "one wandb run id (the killed process's history may not have reached disk)"
    assert state["step"] == 11
    # wandb keeps a step once: the synced run is each file's steps after those of the files before it
    synced, last = {}, -1
    for _, _, rows in runs:
        synced.update({step: row for step, row in rows.items() if step > last})
        last = max([last, *rows])
    assert sorted(synced) == list(range(12)), "every step in the one wandb run: none lost, none twice"
    metrics = {r["step"]: r for r in rundir.read_metrics(metrics)}
    for step, row in synced.items():
        for g in MODULES:
            for field, name in CLIP_FIELDS.items():
                assert row[f"clip/{g}/{name}"] == pytest.approx(metrics[step][field][g], rel=1e-9), (step, g, name)
        assert row["train/loss"] == pytest.approx(metrics[step]["loss"])
    cfg = runs[1][1]
    assert cfg["clip"]["beta"] == config(*overrides).clip.beta and cfg["train"]["max_steps"] == 12


def test_a_restart_after_a_finished_wandb_run_logs_no_step_twice(tmp_path):
    """A process that finished its wandb run (then crashed before COMPLETED) and a restart that
    resumes from an earlier checkpoint: the restart logs only the steps after the finished run's."""
    from aggc.train.wandb_log import WandbLog

    cfg = config("wandb.mode=offline")
    records = [{"step": s, "loss": 1.0 / (s + 1), **{f: {"q_proj": 0.5 + s} for f in CLIP_FIELDS}} for s in range(7)]
    first = WandbLog(cfg, tmp_path)
    for r in records[:5]:
        first.write(r)
    first.close()
    again = WandbLog(cfg, tmp_path, logged=records[:3])  # resumed from checkpoint 3: steps 0-2 in metrics.jsonl
    for r in records[3:]:
        again.write(r)
    again.close()
    (id1, _, rows1), (id2, _, rows2) = offline_runs(tmp_path)
    assert id1 == id2 and sorted(rows1) == [0, 1, 2, 3, 4] and sorted(rows2) == [5, 6]
    assert rows2[6]["clip/q_proj/factor"] == 6.5
