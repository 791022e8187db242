"""A cell of several Slurm tasks ends when one of its ranks fails, by both routes: the
Hydra Slurm launcher's job script (conf/hydra/launcher/slurm.yaml's `setup` lines before
submitit's `srun`) and slurm/array.sbatch. Otherwise the surviving ranks wait in their
next collective until the process group's timeout (30 min for gloo, 10 for NCCL) while
holding every GPU of the cell; Slurm's default (KillOnBadExit=0) leaves them running."""

from __future__ import annotations

import subprocess
import time

import pytest
import submitit
from hydra import compose, initialize_config_dir

from aggc.paths import CONF_DIR, ROOT

from .conftest import wait_until

pytestmark = [pytest.mark.slurm]

# rank 1 fails at once; rank 0 stands for a rank blocked in a collective
RANKS = 'if [ "$SLURM_PROCID" = 1 ]; then exit 3; fi; sleep 300'
ENDS_WITHIN_S = 60


def test_launcher_job_ends_when_one_rank_fails(slurm_cluster, tmp_path, monkeypatch):
    """The launcher's 2-task job, through submitit as hydra-submitit-launcher submits it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        launcher = compose("config", overrides=["hydra/launcher=slurm_local"], return_hydra_config=True).hydra.launcher
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    executor = submitit.SlurmExecutor(folder=tmp_path / "%j")
    executor.update_parameters(partition=launcher.partition, nodes=1, ntasks_per_node=2, cpus_per_task=1, mem="1G",
                               time=10, setup=list(launcher.setup))
    job = executor.submit(submitit.helpers.CommandFunction(["bash", "-c", RANKS]))
    started = time.monotonic()
    try:
        wait_until(lambda: slurm_cluster.jobs(job.job_id).get(job.job_id) in {"FAILED", "COMPLETED", "CANCELLED"},
                   ENDS_WITHIN_S, "the job to end after rank 1 failed", lambda: slurm_cluster.logs(*tmp_path.rglob("*.err")))
    finally:
        slurm_cluster.run("scancel", job.job_id, check=False)
    assert slurm_cluster.jobs(job.job_id)[job.job_id] == "FAILED"
    print(f"ended {time.monotonic() - started:.1f}s after submission")


def test_array_sbatch_task_ends_when_one_rank_fails(slurm_cluster, tmp_path):
    """slurm/array.sbatch's srun with a 2-task array task (PYTHON: a script whose rank 1 fails)."""
    cells, ranks = tmp_path / "cells.txt", tmp_path / "ranks.sh"
    cells.write_text("x\n")
    ranks.write_text(f"#!/bin/bash\n{RANKS}\n")
    ranks.chmod(0o755)
    proc = subprocess.run(["sbatch", "--parsable", "--array=0", "--partition=local", "--gpus-per-node=0", "--ntasks-per-node=2",
                           "--cpus-per-task=1", "--mem=1G", f"--output={tmp_path}/%A_%a.out", str(ROOT / "slurm" / "array.sbatch"),
                           "aggc.train", str(cells)], env={**slurm_cluster.env, "PYTHON": str(ranks)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    try:
        wait_until(lambda: slurm_cluster.jobs(job).get(f"{job}_0") in {"FAILED", "COMPLETED", "CANCELLED"}, ENDS_WITHIN_S,
                   "the array task to end after rank 1 failed", lambda: slurm_cluster.logs(*tmp_path.glob("*.out")))
    finally:
        slurm_cluster.run("scancel", job, check=False)
    assert slurm_cluster.jobs(job)[f"{job}_0"] == "FAILED"
