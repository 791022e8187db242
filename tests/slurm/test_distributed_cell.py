"""A cell of two Slurm tasks is one torch.distributed job: through the real Hydra Slurm
launcher (`hydra.launcher.tasks_per_node=2`, as a table row's `resources.gpus` asks), on the
local Slurm, the entry point sets up the process group from Slurm's variables (submitit's
TorchDistributedEnvironment; gloo on CPU), and the clipper sees the same group norms as
one process with the whole batch (tests/train/test_gradient_invariance.py's property)."""

from __future__ import annotations

import json

import pytest

from aggc.train import rundir

from .test_local_slurm import LOCAL, SWEEP_TIMEOUT_S, array_jobs, cleanup, ended, finish, start_sweep, task_logs

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]

# the tiny SFT cell, 3 optimizer steps of a global batch of 8
CELL = ["strategy=aggc", "data.train_size=64", "train.max_steps=3", "train.save_steps=3", "wandb.mode=disabled",
        "train.gradient_accumulation_steps=1"]


def run_on_slurm(cluster, runs, log, tasks: int, batch: int):
    diagnostics = lambda: cluster.logs(log, *task_logs(runs))  # noqa: E731
    proc = start_sweep(cluster, runs, log, *CELL, f"train.per_device_train_batch_size={batch}",
                       f"hydra.launcher.tasks_per_node={tasks}")
    try:
        assert finish(proc, SWEEP_TIMEOUT_S, diagnostics) == 0, f"the cell failed\n{diagnostics()}"
        (job,) = array_jobs(runs)
        assert set(ended(cluster, job, diagnostics).values()) == {"COMPLETED"}, diagnostics()
    finally:
        cleanup(cluster, array_jobs(runs), proc)
    (run,) = [p.parent for p in runs.glob("tiny_llama/arith/aggc-aggc-*/seed0/COMPLETED")]
    script = next((runs / ".submitit").glob("*/*_submission.sh")).read_text()
    return run, script, diagnostics


def test_two_slurm_tasks_train_one_cell_with_the_norms_of_one_process(slurm_cluster, tmp_path):
    one, _, _ = run_on_slurm(slurm_cluster, tmp_path / "one", tmp_path / "one.log", tasks=1, batch=8)
    two, script, diagnostics = run_on_slurm(slurm_cluster, tmp_path / "two", tmp_path / "two.log", tasks=2, batch=4)

    assert "#SBATCH --ntasks-per-node=2" in script, script
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["world_size"] == 2, manifest
    assert rundir.read_json(one / "manifest.json")["world_size"] == 1
    expected, seen = rundir.read_metrics(one / "metrics.jsonl"), rundir.read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in seen] == [0, 1, 2], f"one record per step: only rank 0 writes the log\n{diagnostics()}"
    assert any(all(n > 0 for n in r["norms"].values()) for r in expected), "some step must have a gradient in every group"
    for step, (want, got) in enumerate(zip(expected, seen)):
        assert set(got["norms"]) == set(want["norms"])
        for group, norm in want["norms"].items():
            assert got["norms"][group] == pytest.approx(norm, rel=1e-4), f"step {step}, group {group}"
