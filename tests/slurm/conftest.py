"""A real single-node Slurm for tests/slurm: started by slurm/local-cluster/start.sh once
per session (installing slurm-wlm and munge when missing), stopped at the end when this
session started it. Skipped, with start.sh's reason, where it cannot run (not root, no
apt-get, packages not installable)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aggc.paths import ROOT

CLUSTER = ROOT / "slurm" / "local-cluster"
STATE = Path(os.environ.get("AGGC_SLURM_STATE", CLUSTER / ".state"))
START_TIMEOUT_S = 900  # a first start installs packages with apt-get


@dataclass
class Cluster:
    """The running local Slurm: its environment for clients and jobs, and diagnostics."""

    conf: Path
    env: dict = field(default_factory=dict)
    partition: str = "local"

    def run(self, *cmd: str, timeout: float = 30, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{self.logs()}")
        return proc

    def jobs(self, job_id: str | None = None) -> dict[str, str]:
        """State of every job slurmctld still knows (finished ones for MinJobAge, 300 s):
        {"12_1": "RUNNING", "12_0": "COMPLETED", "12_[2-3%2]": "PENDING", ...}. squeue, as
        there is no accounting (sacct) on this cluster."""
        cmd = ["squeue", "-h", "-t", "all", "-o", "%i|%T"]
        if job_id:
            cmd += ["-j", job_id]
        proc = self.run(*cmd, check=False)
        return dict(line.split("|", 1) for line in proc.stdout.split() if "|" in line)

    def active(self, job_id: str) -> list[str]:
        """The tasks of job `job_id` not yet ended (pending, running, completing, ...)."""
        ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
        return [task for task, state in self.jobs(job_id).items() if state not in ended]

    def logs(self, *files: Path, lines: int = 40) -> str:
        """Diagnostics for a failure message: the tails of `files` (a driver's output, the
        jobs' stdout/stderr), the queue, and the tails of the daemons' logs."""

        def tails(paths):
            for path in map(Path, paths):
                if path.is_file():
                    text = path.read_text(errors="replace").splitlines()[-lines:]
                    yield f"----- {path} (last {lines} lines) -----\n" + "\n".join(text)

        queue = subprocess.run(["squeue", "-t", "all", "-o", "%i %T %r %M %N"], env=self.env, capture_output=True, text=True)
        daemons = sorted((STATE / "log").glob("*.log"))
        return "\n".join([*tails(files), f"----- squeue -t all -----\n{queue.stdout}{queue.stderr}", *tails(daemons)])


def wait_until(condition, timeout: float, what: str, diagnostics=lambda: "", interval: float = 0.5):
    """Poll `condition()` until it is truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnostics()}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def slurm_cluster():
    STATE.parent.mkdir(parents=True, exist_ok=True)
    with open(STATE.parent / ".start.lock", "w") as lock:  # pytest-xdist workers start it one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        start = subprocess.run([str(CLUSTER / "start.sh")], capture_output=True, text=True, timeout=START_TIMEOUT_S)
    output = start.stdout + start.stderr
    if start.returncode == 2:
        pytest.skip(f"no local Slurm: {output.strip()}")
    assert start.returncode == 0, f"slurm/local-cluster/start.sh failed ({start.returncode}):\n{output}"
    started_here = "already running" not in start.stdout
    conf = STATE / "slurm.conf"
    env = {
        **os.environ,
        "SLURM_CONF": str(conf),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # jobs run `python`: this interpreter (slurm/array.sbatch reads PYTHON)
        "PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cluster = Cluster(conf=conf, env=env)
    try:
        yield cluster
    finally:
        if started_here:
            stop = subprocess.run([str(CLUSTER / "stop.sh")], capture_output=True, text=True, timeout=120)
            print(stop.stdout + stop.stderr)
