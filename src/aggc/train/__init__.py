"""The training stage: one run directory per cell, whichever trainer the cell needs."""

import logging
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path) -> Path:
    """Train one cell, holding its run directory (`session.claimed`: one process at a time,
    the stored config must be this one): SFT (Full FT / LoRA / DoRA / AGGC) by default, GRPO
    when `strategy.trainer=grpo`, GLUE sequence classification when `model.task=seq_cls`."""
    from .session import claimed

    log.info("run directory: %s", run_dir)
    with claimed(cfg, run_dir):
        return _dispatch(cfg, Path(run_dir))


def _dispatch(cfg: DictConfig, run_dir: Path) -> Path:
    """Imported lazily: each trainer pulls in its own libraries."""
    trainer = cfg.strategy.get("trainer", "sft")
    if cfg.model.get("task") == "seq_cls":
        if trainer != "sft":
            from ..config import ConfigError

            raise ConfigError(f"strategy.trainer={trainer!r} with model.task=seq_cls: sequence classifiers train in the GLUE stage only")
        from .glue import run as run_glue

        return run_glue(cfg, run_dir)
    if trainer == "grpo":
        from .grpo import run as run_grpo

        return run_grpo(cfg, run_dir)
    if trainer == "sft":
        from .sft import run as run_sft

        return run_sft(cfg, run_dir)
    from ..config import ConfigError

    raise ConfigError(f"strategy.trainer={trainer!r}: must be sft or grpo")
