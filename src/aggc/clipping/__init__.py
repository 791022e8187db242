"""AGGC and the control clip modes, in pure torch (no Hydra, no transformers).

The clip settings (`ClipConfig`, `.config`) are plain Python; the torch parts are imported
on first use, so a command can validate `clip.*` before torch loads (a bad value fails in a
second, not after the 10 s torch import).
"""

from importlib import import_module

from .config import ClipConfig, ClipConfigError, Multiplier, Schedule

_LAZY = {
    "GradientClipper": ".clipper",
    "NonFiniteGradientError": ".clipper",
    "StepReport": ".clipper",
    "group_parameters": ".grouping",
    "module_type": ".grouping",
    "scheduled_multiplier": ".rules",
}

__all__ = [
    "ClipConfig",
    "ClipConfigError",
    "GradientClipper",
    "Multiplier",
    "NonFiniteGradientError",
    "Schedule",
    "StepReport",
    "group_parameters",
    "module_type",
    "scheduled_multiplier",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
