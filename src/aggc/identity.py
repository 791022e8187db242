"""A run is what it trains: its identity is a hash of its resolved config.

Every key that can change the result counts (model, data, strategy, clip, the train
recipe, ...); the where/how keys do not (`WHERE_KEYS`: runs_root, cache_dir, wandb), and
neither does the seed, so the seeds of one configuration share one `cell id` and a table
cell is exactly the runs with that id. Paths inside the repository, the runs root and the
cache are written relative to them, so a clone elsewhere names the same run the same way.

A run directory is `<runs_root>/<model>/<data>/<strategy>-<clip>-<cell id>/seed<N>`: a
readable prefix, the id, the seed. Configs name it with `${aggc.run_id:}` (registered by
`aggc.paths`), so a command, a sweep and a table's grid all reach the same directory for
the same config, and a changed override reaches a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

WHERE_KEYS = ("runs_root", "cache_dir", "wandb", "hydra")
ID_LENGTH = 10


def identity(cfg: DictConfig | dict) -> dict:
    """The resolved config that determines a run's result, seed excluded, paths portable."""
    if isinstance(cfg, DictConfig):
        # without `hydra`: resolving it would resolve the run directory, which asks for this id
        cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    places = {f"<{key}>": str(cfg[key]) for key in ("runs_root", "cache_dir") if cfg.get(key)}
    from .paths import ROOT

    places["<repo>"] = str(ROOT)
    what = {k: v for k, v in cfg.items() if k not in WHERE_KEYS and k != "seed"}
    return _portable(what, places)


def cell_id(cfg: DictConfig | dict) -> str:
    return digest(identity(cfg))


def digest(value: Any, length: int = ID_LENGTH) -> str:
    """A short hash of a JSON-able value (keys sorted)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def portable(value: Any) -> Any:
    """`value` with paths inside the repository written as `<repo>/...`."""
    from .paths import ROOT

    return _portable(value, {"<repo>": str(ROOT)})


def run_dir(cfg: DictConfig) -> Path:
    """The run directory of `cfg` (what `${aggc.run_id:}` in conf/config.yaml gives Hydra)."""
    return layout(cfg.runs_root, cfg.model.name, cfg.data.name, cfg.strategy.name, cfg.clip.name, cell_id(cfg), cfg.seed)


def layout(runs_root, model: str, data: str, strategy: str, clip: str, cell: str, seed) -> Path:
    """`<runs_root>/<model>/<data>/<strategy>-<clip>-<cell id>/seed<N>`: the one place that
    spells a run directory (`cell="*"`-like glob patterns included)."""
    return Path(runs_root) / model / data / f"{strategy}-{clip}-{cell}" / f"seed{seed}"


def find_runs(runs_root, model: str, data: str, strategy: str, clip: str, seed) -> list[Path]:
    """The run directories of every configuration with these choices (any cell id)."""
    return sorted(Path(runs_root).glob(str(layout(".", model, data, strategy, clip, "[0-9a-f]" * ID_LENGTH, seed))))


def completed_run(runs_root: str, model: str, data: str, strategy: str, clip: str, seed: int) -> str:
    """The one COMPLETED run of these choices under `runs_root` (any cell id), for a config
    that starts from another run's model (make demo-real-grpo starts from demo-real's LoRA
    run). Without exactly one, a path that names what is missing, which loading then reports."""
    runs = [p for p in find_runs(runs_root, model, data, strategy, clip, seed) if (p / "COMPLETED").exists()]
    if len(runs) == 1:
        return str(runs[0])
    return str(layout(runs_root, model, data, strategy, clip, "no-completed-run" if not runs else f"{len(runs)}-completed-runs", seed))


def differences(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two identities (for error messages)."""
    keys = sorted(set(stored) | set(requested))
    out = []
    for k in keys:
        a, b, name = stored.get(k), requested.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def _portable(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _portable(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, places) for v in value]
    if isinstance(value, str):
        if value.startswith("/"):  # one spelling per absolute path (`a//b/./c/` is `a/b/c`)
            value = os.path.normpath(value)
        for marker, place in sorted(places.items(), key=lambda item: -len(item[1])):  # the longest prefix first
            absolute = str(Path(place).resolve())
            for prefix in {place, absolute}:
                if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
                    return marker + value[len(prefix.rstrip("/")):]
    return value
