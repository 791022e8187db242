import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from aggc.paths import CONF_DIR, ROOT

SMOKE = ["model=tiny_llama", "data=arith", "experiment=smoke"]


def train_cli(runs_root: Path, *overrides: str, wait: bool = True, check: bool = True):
    """The real entry point, as a user runs it (`check`: it must succeed)."""
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m (multirun) goes before the overrides
    overrides = [o for o in overrides if not o.startswith("-")]
    cmd = [sys.executable, "-m", "aggc.train", *flags, *SMOKE, f"runs_root={runs_root}", *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 or not check, proc.stderr[-4000:]
    return proc


def config(*overrides: str, smoke: bool = True):
    """The composed run config: the smoke experiment's few steps, or the shipped defaults."""
    base = SMOKE if smoke else ["model=tiny_llama", "data=arith"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


def only_run(root: Path, model: str = "tiny_llama", data: str = "arith", strategy: str = "aggc", clip: str = "aggc",
             seed: int = 0) -> Path:
    """The one run directory of these choices under `root` (`<strategy>-<clip>-<cell id>/seed<N>`)."""
    from aggc.identity import find_runs

    runs = find_runs(root, model, data, strategy, clip, seed)
    assert len(runs) == 1, f"expected one {model}/{data}/{strategy}-{clip}-*/seed{seed} under {root}, found {runs}"
    return runs[0]
