"""AGGC and the control clip modes, in pure torch (no Hydra, no transformers)."""

from .clipper import GradientClipper, NonFiniteGradientError, StepReport
from .config import ClipConfig, ClipConfigError, Multiplier, Schedule
from .grouping import group_parameters, module_type
from .rules import scheduled_multiplier

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
