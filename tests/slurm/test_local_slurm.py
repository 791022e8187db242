"""Sweeps on a real single-node Slurm (slurm/local-cluster/start.sh): the Hydra Slurm
launcher (conf/hydra/launcher/slurm.yaml) and the plain template slurm/array.sbatch, with
the tiny model. No mocks: real slurmctld/slurmd, real sbatch/scancel, real training.

The local cluster has no accounting (no slurmdbd), so `sacct` fails: the tests read job
states from `squeue -t all` and results from the run directories, and every wait has a
timeout. Without sacct, submitit (hence the Hydra driver) cannot learn that Slurm killed
a task and waits for it forever; the kill test ends that driver itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hydra import compose, initialize_config_dir

from aggc.identity import run_dir
from aggc.paths import CONF_DIR, ROOT
from aggc.train import rundir

from .conftest import wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SMOKE = ["model=tiny_llama", "data=arith", "experiment=smoke"]
# the local cluster: partition `local`, 2 cores, no GPU; two tasks at once
LOCAL = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=local",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=20",
    "hydra.launcher.array_parallelism=2",
]
SWEEP_TIMEOUT_S = 300


def sweep_dir(runs_root: Path) -> Path:
    """Where a sweep keeps submitit's files: its runs land in their own configs' directories."""
    return runs_root


def cell_dir(runs_root: Path, *overrides: str) -> Path:
    """A cell's run directory: its config's own (`aggc.identity.run_dir`)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return run_dir(compose("config", overrides=[*SMOKE, f"runs_root={runs_root}", *overrides]))


def start_sweep(cluster, runs_root: Path, log: Path, *overrides: str) -> subprocess.Popen:
    """`python -m aggc.train -m ... hydra/launcher=slurm`, in the background; its output in `log`."""
    cmd = [sys.executable, "-m", "aggc.train", "-m", *SMOKE, f"runs_root={runs_root}", *overrides, *LOCAL]
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=cluster.env, stdout=out, stderr=subprocess.STDOUT, text=True)


def array_jobs(runs_root: Path) -> set[str]:
    """Array jobs submitted for this sweep: submitit's folder <sweep>/.submitit/<jobid>/."""
    folder = sweep_dir(runs_root) / ".submitit"
    return {p.name for p in folder.glob("*") if p.is_dir() and p.name.isdigit()} if folder.is_dir() else set()


def task_logs(runs_root: Path) -> list[Path]:
    return sorted((sweep_dir(runs_root) / ".submitit").glob("*_*/*_log.*"))


def finish(proc: subprocess.Popen, timeout: float, diagnostics) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the sweep's driver did not return within {timeout:.0f}s\n{diagnostics()}")


def cleanup(cluster, job_ids, *procs):
    """End what a test left behind: its drivers and its jobs still in the queue."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    for job in job_ids:
        if cluster.active(job):
            cluster.run("scancel", job, check=False)


def ended(cluster, job: str, diagnostics, timeout: float = 60) -> dict[str, str]:
    """The final state of each task of `job`, once none is pending, running or completing
    (a driver returns when the results are written, its tasks may still be exiting)."""
    wait_until(lambda: not cluster.active(job), timeout, f"the tasks of job {job} to end", diagnostics)
    return cluster.jobs(job)


def assert_complete(run: Path, steps: int, diagnostics) -> None:
    assert rundir.is_completed(run), f"{run} has no COMPLETED\n{diagnostics()}"
    assert (run / "final" / "model.safetensors").is_file() and (run / "final" / "config.json").is_file()
    records = rundir.read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(steps)), "metrics.jsonl reads as one uninterrupted run"
    assert json.loads((run / "COMPLETED").read_text())["global_step"] == steps


def test_sweep_runs_as_one_array_job(slurm_cluster, tmp_path):
    """A 4-cell sweep through `hydra/launcher=slurm` is ONE Slurm array job of 4 tasks
    (2 at once), and every cell's run directory is complete."""
    runs = tmp_path / "runs"
    log = tmp_path / "driver.log"
    betas, seeds = ("0.5", "0.9"), ("0", "1")
    diagnostics = lambda: slurm_cluster.logs(log, *task_logs(runs))  # noqa: E731
    proc = start_sweep(slurm_cluster, runs, log, "strategy=aggc", f"clip.beta={','.join(betas)}", f"seed={','.join(seeds)}")
    try:
        assert finish(proc, SWEEP_TIMEOUT_S, diagnostics) == 0, f"the sweep failed\n{diagnostics()}"
        jobs = array_jobs(runs)
        assert len(jobs) == 1, f"one sweep, one sbatch: {sorted(jobs)}\n{diagnostics()}"
        (job,) = jobs
        # Before the clean-up: the driver returns once the results are written, and a task
        # still exiting then would be cancelled by it (seen on a loaded machine).
        states = ended(slurm_cluster, job, diagnostics)  # slurmctld keeps ended jobs for MinJobAge (300 s)
    finally:
        cleanup(slurm_cluster, array_jobs(runs), proc)

    submitit = sweep_dir(runs) / ".submitit"
    script = (submitit / job / f"{job}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --partition=local" in script, script
    assert sorted(p.name for p in submitit.glob(f"{job}_*")) == [f"{job}_{i}" for i in range(4)]
    for i in range(4):  # each task ran as <jobid>_<index> of that one array
        out = (submitit / f"{job}_{i}" / f"{job}_{i}_0_log.out").read_text()
        assert f"job_id={job}_{i}," in out and "Job completed successfully" in out, out[-3000:]
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(4)}, states

    for beta in betas:
        for seed in seeds:
            run = cell_dir(runs, f"clip.beta={beta}", f"seed={seed}", "strategy=aggc")
            assert_complete(run, 6, diagnostics)
            assert f"beta: {beta}" in (run / "config.yaml").read_text()


def test_preempted_task_requeues_killed_task_resumes_on_rerun(slurm_cluster, tmp_path):
    """Two cells of a running sweep, each past its first checkpoint. Task 0 is preempted
    (submitit's USR2): it requeues itself (max_num_timeout) and resumes from its checkpoint
    in the same run directory. Task 1 is killed (scancel). Re-running the same sweep skips
    the finished cell (COMPLETED and metrics.jsonl untouched) and resumes the killed one
    from its checkpoint to the end."""
    runs = tmp_path / "runs"
    logs = [tmp_path / "driver-1.log", tmp_path / "driver-2.log"]
    # ~20 s of training (0.15 s a step on one core): time to stop tasks between checkpoints
    steps = 150
    overrides = ["strategy=aggc", f"train.max_steps={steps}", "train.save_steps=10", "train.per_device_train_batch_size=16"]
    preempted = cell_dir(runs, *overrides, "seed=0")  # task 0
    killed = cell_dir(runs, *overrides, "seed=1")  # task 1
    diagnostics = lambda: slurm_cluster.logs(*logs, *task_logs(runs))  # noqa: E731

    first = second = None
    try:
        first = start_sweep(slurm_cluster, runs, logs[0], *overrides, "seed=0,1")
        wait_until(lambda: array_jobs(runs) or first.poll() is not None, 120, "the array job", diagnostics)
        assert first.poll() is None, f"the driver ended early\n{diagnostics()}"
        (job,) = array_jobs(runs)
        for run in (preempted, killed):
            wait_until(lambda: rundir.last_checkpoint(run / "checkpoints"), 240, f"a checkpoint in {run.name}", diagnostics)
        assert not rundir.is_completed(preempted) and not rundir.is_completed(killed), (
            f"a cell finished before it could be stopped: raise max_steps\n{diagnostics()}"
        )
        slurm_cluster.run("scancel", "--signal=USR2", f"{job}_0")  # what Slurm sends before preempting
        slurm_cluster.run("scancel", f"{job}_1")
        # CANCELLED once its processes are gone (a submitit task ignores SIGTERM: SIGKILL after KillWait)
        assert ended(slurm_cluster, f"{job}_1", diagnostics) == {f"{job}_1": "CANCELLED"}
        assert not rundir.is_completed(killed)
        resume_from = rundir.last_checkpoint(killed / "checkpoints")
        assert resume_from is not None and rundir.checkpoint_step(resume_from) < steps

        # the preempted task: requeued (PENDING for cred_expire, 10 s), then runs to the end
        assert ended(slurm_cluster, job, diagnostics, SWEEP_TIMEOUT_S)[f"{job}_0"] == "COMPLETED", diagnostics()
        assert_complete(preempted, steps, diagnostics)
        requeued = json.loads((preempted / "manifest.json").read_text())["resumed_from"]
        assert len(requeued) == 1 and requeued[0].startswith("checkpoint-"), requeued
        # requeued by itself, once (srun truncates the task's log on the restart: ask slurmctld)
        assert "Restarts=1 " in slurm_cluster.run("scontrol", "show", "job", f"{job}_0").stdout
        # The driver waits on every task's result. Without accounting it never learns that
        # task 1 was cancelled and waits forever; with sacct it would fail. Either way: end it.
        if first.poll() is None:
            first.kill()
            first.wait()
        else:
            assert first.returncode != 0, f"a sweep with a cancelled task cannot succeed\n{diagnostics()}"

        done = {name: (preempted / name).stat().st_mtime_ns for name in ("COMPLETED", "metrics.jsonl", "manifest.json")}
        metrics = (preempted / "metrics.jsonl").read_bytes()

        second = start_sweep(slurm_cluster, runs, logs[1], *overrides, "seed=0,1")
        assert finish(second, SWEEP_TIMEOUT_S, diagnostics) == 0, f"the re-run failed\n{diagnostics()}"
        (rerun,) = array_jobs(runs) - {job}
        assert ended(slurm_cluster, rerun, diagnostics) == {f"{rerun}_0": "COMPLETED", f"{rerun}_1": "COMPLETED"}

        # the finished cell returned at once
        assert {name: (preempted / name).stat().st_mtime_ns for name in done} == done
        assert (preempted / "metrics.jsonl").read_bytes() == metrics
        skipped = (sweep_dir(runs) / ".submitit" / f"{rerun}_0" / f"{rerun}_0_0_log.out").read_text()
        assert "COMPLETED; nothing to do" in skipped, skipped[-3000:]
        # the killed cell resumed from its last whole checkpoint and ran to the end
        assert_complete(killed, steps, diagnostics)
        manifest = json.loads((killed / "manifest.json").read_text())
        assert manifest["resumed_from"] == [resume_from.name], manifest
    finally:
        cleanup(slurm_cluster, array_jobs(runs), first, second)


def sbatch(cluster, cwd: Path, *args: str) -> str:
    """Submit slurm/array.sbatch with the local cluster's resources; the job id."""
    local = ["--partition=local", "--gpus-per-node=0", "--cpus-per-task=1", "--mem=2G", "--time=20"]
    out = cluster.run("sbatch", "--parsable", *local, "-o", str(cwd / "%x-%A_%a.out"), *args, cwd=cwd).stdout
    return out.strip().split(";")[0]


def test_array_sbatch_runs_cells_and_reruns_one_index(slurm_cluster, tmp_path):
    """slurm/array.sbatch runs line N+1 of a cells file as array index N; a failed index
    is rerun alone with --array=<index>; resubmitting the whole array skips finished cells."""
    runs = tmp_path / "runs"
    cells = tmp_path / "cells.txt"
    base = " ".join([*SMOKE, f"runs_root={runs}", "strategy=aggc"])
    cells.write_text(f"{base} seed=0\n{base} seed=1 clip.beta=1.5\n")  # line 2 (index 1) is invalid
    template = str(ROOT / "slurm" / "array.sbatch")
    run = {0: cell_dir(runs, "strategy=aggc", "seed=0"), 1: cell_dir(runs, "strategy=aggc", "seed=1", "clip.beta=0.5")}
    out = lambda job, i: tmp_path / f"aggc-{job}_{i}.out"  # noqa: E731
    submitted: list[str] = []
    diagnostics = lambda: slurm_cluster.logs(*sorted(tmp_path.glob("aggc-*.out")))  # noqa: E731

    def wait_for(job):
        return ended(slurm_cluster, job, diagnostics, SWEEP_TIMEOUT_S)

    try:
        first = sbatch(slurm_cluster, tmp_path, "--array=0-1%2", template, "aggc.train", str(cells))
        submitted.append(first)
        assert wait_for(first) == {f"{first}_0": "COMPLETED", f"{first}_1": "FAILED"}, diagnostics()
        assert_complete(run[0], 6, diagnostics)
        assert "clip.beta=1.5: must lie in [0, 1)" in out(first, 1).read_text()
        assert not rundir.is_completed(run[1])
        done = (run[0] / "COMPLETED").stat().st_mtime_ns

        cells.write_text(f"{base} seed=0\n{base} seed=1 clip.beta=0.5\n")  # fix line 2, rerun index 1 alone
        again = sbatch(slurm_cluster, tmp_path, "--array=1", template, "aggc.train", str(cells))
        submitted.append(again)
        assert wait_for(again) == {f"{again}_1": "COMPLETED"}, diagnostics()
        assert_complete(run[1], 6, diagnostics)
        assert "beta: 0.5" in (run[1] / "config.yaml").read_text()
        assert (run[0] / "COMPLETED").stat().st_mtime_ns == done

        finished = {seed: (path / "COMPLETED").stat().st_mtime_ns for seed, path in run.items()}
        whole = sbatch(slurm_cluster, tmp_path, "--array=0-1", template, "aggc.train", str(cells))
        submitted.append(whole)
        assert wait_for(whole) == {f"{whole}_0": "COMPLETED", f"{whole}_1": "COMPLETED"}, diagnostics()
        assert {seed: (path / "COMPLETED").stat().st_mtime_ns for seed, path in run.items()} == finished
        for i in (0, 1):
            text = out(whole, i).read_text()
            assert "COMPLETED; nothing to do" in text, text[-3000:]
    finally:
        cleanup(slurm_cluster, submitted)
