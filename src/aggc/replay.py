"""Replay clip settings on a logged norm sequence, without a GPU or a model.

AGGC depends only on each group's norm sequence, so the factors it would have applied
to a run follow from the run's logged pre-clip norms (`metrics.jsonl`'s `norms`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from .clipping import ClipConfig
from .clipping.rules import STATE_DTYPE, build_rule, learning_mask
from .config import ADAGC_NOT_REPLAYABLE, ConfigError, clip_config
from .paths import CONF_DIR


def read_norms(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"norms={path}: no such file")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if "step" not in record or "norms" not in record:
            raise ValueError(f"{path}:{number}: each line needs 'step' and 'norms' ({{group: norm}})")
        records.append(record)
    if not records:
        raise ValueError(f"norms={path}: no records")
    return records


def replay(records: list[dict], config: ClipConfig, total_steps: int = 0) -> list[dict]:
    """The per-step, per-group `{norm, lower, upper, scale, ema}` these settings give."""
    if config.mode == "adagc":
        raise ConfigError(ADAGC_NOT_REPLAYABLE)
    groups = list(dict.fromkeys(g for r in records for g in r["norms"]))
    rule = build_rule(config, len(groups))
    rule.total_steps = total_steps or len(records)
    out = []
    for record in records:
        values = [record["norms"].get(g) for g in groups]
        present = torch.tensor([v is not None for v in values])
        norms = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=STATE_DTYPE)
        finite = torch.isfinite(norms)
        accept = learning_mask(present, finite, (finite | ~present).all(), config.nonfinite)
        rule.step = int(record["step"])
        result = rule.factors(torch.where(present, norms, 0.0), accept)
        rows = torch.stack([norms, result["lower"], result["upper"], result["factor"], result["ema"]]).tolist()
        out.append({
            "step": record["step"],
            "groups": {
                g: {k: (rows[i][j] if math.isfinite(rows[i][j]) else None) for i, k in enumerate(("norm", "lower", "upper", "scale", "ema"))}
                for j, g in enumerate(groups)
                if values[j] is not None
            },
        })
    return out


def summarize(steps: list[dict]) -> dict[str, dict[str, float]]:
    """Per group: fraction of steps clipped down, raised, and the mean factor."""
    summary: dict[str, list[float]] = {}
    for step in steps:
        for g, v in step["groups"].items():
            summary.setdefault(g, []).append(v["scale"])
    return {
        g: {"steps": len(s), "clip_down_rate": sum(x < 1 for x in s) / len(s), "raise_rate": sum(x > 1 for x in s) / len(s), "mean_scale": sum(s) / len(s)}
        for g, s in summary.items()
    }


@hydra.main(config_path=str(CONF_DIR), config_name="replay", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = clip_config(cfg)
    steps = replay(read_norms(Path(cfg.norms)), config, cfg.total_steps)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(s) + "\n" for s in steps))
    print(f"{len(steps)} steps replayed with clip={cfg.clip.name} -> {out}")
    print(f"{'group':<16}{'steps':>7}{'clipped down':>14}{'raised':>9}{'mean scale':>12}")
    for g, s in summarize(steps).items():
        print(f"{g:<16}{s['steps']:>7}{s['clip_down_rate']:>14.1%}{s['raise_rate']:>9.1%}{s['mean_scale']:>12.4f}")


if __name__ == "__main__":
    main()
