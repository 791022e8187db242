"""The run directory: the unit of work, of resume and of a Slurm array task.

    <run>/config.yaml         resolved config
    <run>/manifest.json       git commit, package versions, seed, host, peak memory
    <run>/metrics.jsonl       one record per optimizer step (loss, lr, per-group norms)
    <run>/checkpoints/checkpoint-N/   Trainer checkpoint + clipper.pt
    <run>/final/              the final model (adapters merged)
    <run>/COMPLETED           written last: the run is done
    <run>.lock (beside it)    held by the one process training or evaluating the run

A checkpoint counts only when its `WHOLE` marker, written last with the size of every
file, matches what is on disk: a kill or a full disk mid-save leaves an older checkpoint
to resume from.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError
from ..identity import cell_id, differences, digest, identity

log = logging.getLogger(__name__)

COMPLETED = "COMPLETED"
CLIPPER_STATE = "clipper.pt"
WHOLE = "WHOLE"
LOCK, LOCK_HOLDER = ".lock", ".lock.holder"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "hydra-core", "lm-eval", "aggc")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def is_completed(run_dir: Path) -> bool:
    return (run_dir / COMPLETED).exists()


def mark_completed(run_dir: Path, summary: dict) -> None:
    """COMPLETED, stamped with when and by which process: every training that finishes
    writes another, so an evaluation can tell the model it scored (`model_fingerprint`)."""
    stamp = {"completed": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "pid": os.getpid(),
             "nonce": os.urandom(8).hex()}
    atomic_write_text(run_dir / COMPLETED, json.dumps({**summary, **stamp}, indent=2) + "\n")


def model_fingerprint(run_dir: Path) -> str:
    """The final model of a COMPLETED run: its cell id and seed and its completion stamp."""
    return digest({"run": run_dir.parent.name + "/" + run_dir.name, "completed": (run_dir / COMPLETED).read_text()}, 16)


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def check_same_run(run_dir: Path, cfg: DictConfig) -> None:
    """A run directory holds one configuration: a request whose config differs from the
    stored one (changed code defaults, a hand-made path) is neither resumed nor done."""
    stored_path = run_dir / "config.yaml"
    if not stored_path.exists():
        return
    stored, requested = identity(OmegaConf.to_container(OmegaConf.load(stored_path))), identity(cfg)
    if stored != requested:
        changed = differences(stored, requested)
        raise ConfigError(f"{run_dir} holds another configuration than this command's ({len(changed)} differences: "
                          f"{'; '.join(changed[:5])}): it is neither resumed nor reported done. Run without "
                          f"hydra.run.dir to get this config's own directory (cell id {cell_id(cfg)})")


def acquire(run_dir: Path) -> FileLock:
    """The run's exclusive lock (an OS lock: it dies with its process), a file beside the
    run directory (`seed0.lock`), so that taking it writes nothing into the run. A second
    process says who holds it and waits for it."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(beside(run_dir, LOCK))
    holder = beside(run_dir, LOCK_HOLDER)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = holder.read_text().strip() if holder.exists() else "another process"
        print(f"{run_dir} is in use by {who}; waiting for it to finish", file=sys.stderr, flush=True)
        lock.acquire()
    atomic_write_text(holder, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
                              f" (job {job_key()})\n")
    return lock


def release(lock: FileLock, run_dir: Path) -> None:
    """Give the run back: who held it is no longer true, so it goes first."""
    beside(run_dir, LOCK_HOLDER).unlink(missing_ok=True)
    lock.release()


def beside(run_dir: Path, suffix: str) -> Path:
    """A file next to the run directory (`seed0.lock`), outside what the run holds."""
    return run_dir.with_name(run_dir.name + suffix)


def job_key() -> str:
    """What the processes of one distributed job share (its rendezvous), so the other ranks
    can tell that their rank 0 holds a run's lock; the pid in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}:{os.environ.get('TORCHELASTIC_RUN_ID', '')}"
    return f"pid {os.getpid()}"


def wait_for_rank_zero(run_dir: Path, poll: float = 0.5) -> bool:
    """Rank > 0: wait until this job's rank 0 holds the run's lock (True: train) or the run
    is COMPLETED (False: nothing to do), as rank 0 decides under the lock."""
    holder = beside(run_dir, LOCK_HOLDER)
    mine = f"(job {job_key()})"
    while True:
        if holder.exists() and holder.read_text().strip().endswith(mine):
            return True
        if is_completed(run_dir):
            return False
        time.sleep(poll)


def git_state() -> dict:
    """The commit of the code that runs, and whether tracked files other than committed
    results (`results/`: what runs produce, not code) differ from it."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": None, "git_dirty": None}
    if out.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    code = [line[3:] for line in dirty.stdout.splitlines() if not line[3:].startswith("results/")]
    return {"git_commit": out.stdout.strip(), "git_dirty": bool(code)}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def determinism_settings() -> dict:
    """What a run's last bits can depend on besides its code, config and package versions
    (README, "Determinism and provenance"): the CPU threads and the environment variables
    that set them, the CPU, the tokenizers build."""
    import torch

    env = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "MKL_CBWR",
           "CUBLAS_WORKSPACE_CONFIG", "TOKENIZERS_PARALLELISM")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": cpu or platform.processor(),
            "env": {k: os.environ.get(k) for k in env}, "torch": torch.__version__,
            "tokenizers": metadata.version("tokenizers"), "mkl": torch.backends.mkl.is_available(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def this_start(resumed_from: str | None) -> dict:
    """One process's (re)start of a run: its code, machine and command."""
    return {**git_state(), "host": socket.gethostname(), "pid": os.getpid(), "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed_from": resumed_from, "seconds": 0.0}


def write_manifest(run_dir: Path, cfg: DictConfig, **extra) -> None:
    """The manifest of a new run; `record_start` adds each restart to its `starts`."""
    manifest = {
        "cell_id": cell_id(cfg),
        **git_state(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "seed": cfg.seed,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "starts": [this_start(None)],
        "determinism": determinism_settings(),
        **extra,
    }
    atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def record_start(run_dir: Path, resumed_from: str) -> None:
    manifest = read_json(run_dir / "manifest.json")
    update_manifest(run_dir, resumed_from=manifest.get("resumed_from", []) + [resumed_from],
                    starts=manifest.get("starts", []) + [this_start(resumed_from)])


def record_progress(run_dir: Path, seconds: float) -> None:
    """This process's training time and peak memory so far, in its entry of `starts` (a
    killed process keeps what it had at its last checkpoint)."""
    starts = read_json(run_dir / "manifest.json")["starts"]
    starts[-1].update(seconds=round(seconds, 2), **peak_memory())
    update_manifest(run_dir, starts=starts)


def peak_memory() -> dict:
    """Peak RSS of this process and, on GPU, torch's peak allocated memory (Table 8)."""
    import resource

    import torch

    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        peak["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def run_peak_memory(starts: list[dict]) -> dict:
    """A run's peak memory: the largest of its processes' (a requeued run's last process
    may have trained nothing)."""
    keys = {k for s in starts for k in s if k.startswith("peak_")}
    return {k: max(s[k] for s in starts if k in s) for k in sorted(keys)}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def update_manifest(run_dir: Path, **fields) -> None:
    path = run_dir / "manifest.json"
    manifest = read_json(path)
    manifest.update(fields)
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step of a Trainer checkpoint directory `checkpoint-N`."""
    return int(checkpoint.name.split("-")[-1])


def mark_whole(checkpoint: Path) -> None:
    """Written last into a checkpoint: the size of every file in it."""
    sizes = {str(f.relative_to(checkpoint)): f.stat().st_size for f in sorted(checkpoint.rglob("*"))
             if f.is_file() and f.name != WHOLE}
    atomic_write_text(checkpoint / WHOLE, json.dumps(sizes, indent=1) + "\n")


def is_whole(checkpoint: Path) -> bool:
    marker = checkpoint / WHOLE
    if not marker.exists():
        return False
    try:
        sizes = read_json(marker)
    except ValueError:
        return False
    return CLIPPER_STATE in sizes and all((checkpoint / name).is_file() and (checkpoint / name).stat().st_size == size
                                          for name, size in sizes.items())


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest whole checkpoint (`is_whole`); newer ones that are not whole are passed
    over with a warning (a kill mid-save, a truncated file)."""
    if not checkpoints.is_dir():
        return None
    candidates = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=checkpoint_step,
        reverse=True,
    )
    for path in candidates:
        if is_whole(path):
            return path
        log.warning("%s is not a whole checkpoint (no %s marker, or a file's size differs from it): passed over", path, WHOLE)
    return None


class MetricsLog:
    """Append-only JSON-lines log, one record per optimizer step, flushed per line.

    On resume from a checkpoint at step N the records of steps >= N (written by the
    interrupted process after its last checkpoint) are dropped, so the log reads as one
    uninterrupted run.
    """

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = [json.dumps(r) for r in read_metrics(path) if r["step"] < resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif resume_step is None and path.exists():
            path.unlink()
        self._file = open(path, "a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> list[dict]:
    """The log's records. A torn last line (a process killed mid-write) is dropped with a
    warning; a bad line elsewhere is an error naming file and line."""
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            if number == len(lines) and not path.read_text().endswith("\n"):
                log.warning("%s: line %d is torn (a process was killed while writing it): dropped", path, number)
                continue
            raise ValueError(f"{path}, line {number}: not a JSON record ({err})") from err
    return records


def train_loss(records: list[dict]) -> float | None:
    """The mean logged loss over all of a run's steps, whatever processes trained them."""
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    return sum(losses) / len(losses) if losses else None
