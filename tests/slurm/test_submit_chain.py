"""`make table4 TINY=1 LAUNCHER=slurm_local` on the local Slurm: the driver submits the
training array, the evaluation array that waits per cell (aftercorr) and the table's job
(afterany), and exits at once; run again while they are queued, it submits nothing twice;
the table appears when the jobs end; STATUS=1 shows every cell done and its tasks COMPLETED."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from aggc.overrides import quoted
from aggc.paths import ROOT

from .conftest import wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CHAIN_TIMEOUT_S = 420


def test_tiny_table_is_submitted_as_a_chain_and_appears_when_the_jobs_end(slurm_cluster, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = [sys.executable, "-m", "aggc.grid", "table=table4", "tiny=true", "launcher=slurm_local", f"runs_root={runs}", f"out_dir={out}"]
    logs = lambda: slurm_cluster.logs(*sorted((runs / "plan" / "logs").glob("*.out")))  # noqa: E731
    started = time.monotonic()
    driver = subprocess.run(args, cwd=ROOT, env=slurm_cluster.env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    jobs_file = runs / "plan" / "table4.jobs.json"
    jobs = json.loads(jobs_file.read_text()) if jobs_file.exists() else []
    try:
        assert driver.returncode == 0, driver.stderr[-3000:]
        assert [e["key"] for e in jobs] == ["train-w1-g1", "eval-w1-g1", "table"], driver.stdout[-3000:]
        ids = {e["key"]: e["job"] for e in jobs}
        assert not (out / "table4.md").exists(), "the driver returned before the jobs ran"
        # the evaluation tasks wait for their own training task; the table for everything
        deps = dict(line.split("|", 1) for line in slurm_cluster.run("squeue", "-h", "-r", "-o", "%i|%E").stdout.split() if "|" in line)
        assert all(deps[f"{ids['eval-w1-g1']}_{i}"].startswith(f"aftercorr:{ids['train-w1-g1']}_") for i in (0, 1)
                   if f"{ids['eval-w1-g1']}_{i}" in deps), deps
        # run again while they are queued: nothing is submitted twice
        again = subprocess.run(args, cwd=ROOT, env=slurm_cluster.env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "nothing new to submit" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
        assert json.loads(jobs_file.read_text()) == jobs
        wait_until(lambda: (out / "table4.md").exists(), CHAIN_TIMEOUT_S, "the table", logs)
        wait_until(lambda: not slurm_cluster.active(ids["table"]), 60, "the table's job to end", logs)
    finally:
        for job in [e["job"] for e in jobs]:
            if slurm_cluster.active(job):
                slurm_cluster.run("scancel", job, check=False)
    print(f"driver returned in {took:.1f}s")
    assert took < 60, f"the driver took {took:.0f}s: it must submit and return"
    states = slurm_cluster.jobs()
    assert all(states[f"{ids[k]}_{i}"] == "COMPLETED" for k in ("train-w1-g1", "eval-w1-g1") for i in (0, 1)), states
    assert states[ids["table"]] == "COMPLETED", states
    table = (out / "table4.md").read_text()
    assert "β = 0.1" in table and "β = 0.95" in table

    status = subprocess.run([*args, "status=true"], cwd=ROOT, env=slurm_cluster.env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-3000:]
    cells = [line for line in status.stdout.splitlines() if " seed 0 " in line]
    assert len(cells) == 2 and all("train: done" in c and "arith done" in c and "COMPLETED" in c for c in cells), status.stdout
    assert f"table job {ids['table']}: COMPLETED" in status.stdout


def test_arrays_queued_before_a_failed_sbatch_are_not_queued_twice(slurm_cluster, tmp_path):
    """The evaluation array's sbatch fails (a partition that does not exist) after the
    training array was queued: the training array is recorded, and the next submission,
    while it still waits, does not queue its cells again (two tasks would train one run
    directory at once)."""
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "aggc.grid", "table=table4", "tiny=true", "launcher=slurm_local", f"runs_root={runs}",
            f"out_dir={tmp_path / 'out'}", "train_args=" + quoted("+hydra.launcher.additional_parameters.begin=now+600")]  # it waits 10 min
    jobs_file = runs / "plan" / "table4.jobs.json"
    failed = subprocess.run([*args, "eval_args=" + quoted("hydra.launcher.partition=nope")], cwd=ROOT, env=slurm_cluster.env, capture_output=True,
                            text=True, timeout=120)
    jobs = json.loads(jobs_file.read_text()) if jobs_file.exists() else []
    try:
        assert failed.returncode != 0 and "sbatch failed" in failed.stderr, failed.stdout[-2000:] + failed.stderr[-2000:]
        assert [e["key"] for e in jobs] == ["train-w1-g1"] and len(jobs[0]["runs"]) == 2, jobs
        assert slurm_cluster.active(jobs[0]["job"]), slurm_cluster.logs()
        again = subprocess.run(args, cwd=ROOT, env=slurm_cluster.env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "2 cells have a task of an earlier submission" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
        assert json.loads(jobs_file.read_text()) == jobs
    finally:
        for job in [e["job"] for e in json.loads(jobs_file.read_text())] if jobs_file.exists() else []:
            slurm_cluster.run("scancel", job, check=False)
