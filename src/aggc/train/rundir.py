"""The run directory: the unit of work, of resume and of a Slurm array task.

    <run>/config.yaml         resolved config
    <run>/manifest.json       git commit, package versions, seed, host, peak memory
    <run>/metrics.jsonl       one record per optimizer step (loss, lr, per-group norms)
    <run>/checkpoints/checkpoint-N/   Trainer checkpoint + clipper.pt
    <run>/final/              the final model (adapters merged)
    <run>/COMPLETED           written last: the run is done
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

COMPLETED = "COMPLETED"
CLIPPER_STATE = "clipper.pt"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "hydra-core", "lm-eval", "aggc")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def is_completed(run_dir: Path) -> bool:
    return (run_dir / COMPLETED).exists()


def mark_completed(run_dir: Path, summary: dict) -> None:
    atomic_write_text(run_dir / COMPLETED, json.dumps(summary, indent=2) + "\n")


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


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


def write_manifest(run_dir: Path, seed: int, **extra) -> None:
    manifest = {
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "seed": seed,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "determinism": determinism_settings(),
        **extra,
    }
    atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")


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


def last_checkpoint(checkpoints: Path, needs_clipper_state: bool = True) -> Path | None:
    """The newest checkpoint that is whole: the Trainer's state and (when the run clips
    with state) the clipper's. A kill between the two writes leaves an older one."""
    if not checkpoints.is_dir():
        return None
    candidates = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=checkpoint_step,
        reverse=True,
    )
    for path in candidates:
        if (path / "trainer_state.json").exists() and (not needs_clipper_state or (path / CLIPPER_STATE).exists()):
            return path
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
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < resume_step]
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
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
