"""A cell of two Slurm tasks is one torch.distributed job, by both routes a cell reaches
Slurm: the Hydra Slurm launcher (`hydra.launcher.tasks_per_node=2`) and slurm/array.sbatch
with `--ntasks-per-node=2` (what `make <table> LAUNCHER=slurm` submits for a row with
`resources.gpus`). On the local Slurm the training entry point sets the process group up
from Slurm's variables (submitit's TorchDistributedEnvironment; gloo on CPU), and the
clipper sees the same group norms as one process with the whole batch
(tests/train/test_gradient_invariance.py's property)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from aggc.overrides import cells_line, quoted
from aggc.paths import CONF_DIR, ROOT
from aggc.train import rundir
from aggc.train import run as train_stage

from .test_local_slurm import SMOKE, SWEEP_TIMEOUT_S, array_jobs, cleanup, ended, finish, sbatch, start_sweep, task_logs

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]

# the tiny SFT cell, 3 optimizer steps of a global batch of 8
CELL = ["strategy=aggc", "data.train_size=64", "train.max_steps=3", "train.save_steps=3", "wandb.mode=disabled",
        "train.gradient_accumulation_steps=1"]


def only_run(runs: Path) -> Path:
    (run,) = [p.parent for p in runs.glob("tiny_llama/arith/aggc-aggc-*/seed0/COMPLETED")]
    return run


def through_launcher(cluster, tmp_path: Path) -> Path:
    runs, log = tmp_path / "runs", tmp_path / "driver.log"
    diagnostics = lambda: cluster.logs(log, *task_logs(runs))  # noqa: E731
    proc = start_sweep(cluster, runs, log, *CELL, "train.per_device_train_batch_size=4", "hydra.launcher.tasks_per_node=2")
    try:
        assert finish(proc, SWEEP_TIMEOUT_S, diagnostics) == 0, f"the cell failed\n{diagnostics()}"
        (job,) = array_jobs(runs)
        assert set(ended(cluster, job, diagnostics).values()) == {"COMPLETED"}, diagnostics()
    finally:
        cleanup(cluster, array_jobs(runs), proc)
    script = next((runs / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script, script
    return only_run(runs)


def through_array_sbatch(cluster, tmp_path: Path) -> Path:
    runs, cells = tmp_path / "runs", tmp_path / "cells.txt"
    cells.write_text(cells_line([*SMOKE, *CELL, "train.per_device_train_batch_size=4", f"runs_root={quoted(runs)}"]))
    job = sbatch(cluster, tmp_path, "--array=0", "--ntasks-per-node=2", str(ROOT / "slurm" / "array.sbatch"), "aggc.train", str(cells))
    try:
        states = ended(cluster, job, lambda: cluster.logs(*tmp_path.glob("*.out")), SWEEP_TIMEOUT_S)
    finally:
        cleanup(cluster, [job])
    assert states == {f"{job}_0": "COMPLETED"}, cluster.logs(*tmp_path.glob("*.out"))
    return only_run(runs)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> list[dict]:
    """The norms of one process with the whole batch of 8 in one micro-batch."""
    root = tmp_path_factory.mktemp("one")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMOKE, *CELL, "train.per_device_train_batch_size=8", f"runs_root={root}"])
        train_stage(cfg, root / "run")
    assert rundir.read_json(root / "run" / "manifest.json")["world_size"] == 1
    return rundir.read_metrics(root / "run" / "metrics.jsonl")


@pytest.mark.parametrize("route", [through_launcher, through_array_sbatch], ids=["hydra launcher", "array.sbatch"])
def test_two_slurm_tasks_train_one_cell_with_the_norms_of_one_process(slurm_cluster, one_process, tmp_path, route):
    two = route(slurm_cluster, tmp_path)
    assert json.loads((two / "manifest.json").read_text())["world_size"] == 2
    expected, seen = one_process, rundir.read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in seen] == [0, 1, 2], "one record per step: only rank 0 writes the log"
    assert any(all(n > 0 for n in r["norms"].values()) for r in expected), "some step must have a gradient in every group"
    for step, (want, got) in enumerate(zip(expected, seen)):
        assert set(got["norms"]) == set(want["norms"])
        for group, norm in want["norms"].items():
            assert got["norms"][group] == pytest.approx(norm, rel=1e-4), f"step {step}, group {group}"
