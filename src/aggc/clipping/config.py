"""The clip settings, validated before any model is built.

Plain dataclasses (no Hydra): the training stage turns `cfg.clip` into a `ClipConfig`
with `ClipConfig.from_dict`, and every bad value fails here with the public key name
(`clip.beta`, `clip.schedule.width`, ...) in the message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

MODES = ("none", "global", "aggc", "adagc")
SEMANTICS = ("reference", "paper")
GROUPINGS = ("lora", "trainable")
SCHEDULES = ("none", "linear")
NONFINITE_POLICIES = ("skip", "zero", "error")


class ClipConfigError(ValueError):
    """A clip setting is invalid; the message names the `clip.*` key."""


@dataclass(frozen=True)
class Multiplier:
    """An interval multiplier: `init` before the schedule's window, `late` after it.

    `late=None` means "same as init". The authors' code spells that as 0, which the
    `reference` semantics also accepts.
    """

    init: float
    late: float | None = None


@dataclass(frozen=True)
class Schedule:
    """Linear move of the multipliers over the fraction p = t/T of training (eq. 5)."""

    kind: str = "linear"
    start: float = 0.4
    width: float = 0.3


@dataclass(frozen=True)
class ClipConfig:
    mode: str = "aggc"
    semantics: str = "reference"
    groups: str = "lora"
    beta: float = 0.95
    adaptive: bool = True
    alpha_low: Multiplier = field(default_factory=lambda: Multiplier(0.95, 0.98))
    alpha_high: Multiplier = field(default_factory=lambda: Multiplier(0.6, 0.7))
    schedule: Schedule = field(default_factory=Schedule)
    min_norm: float = 0.01
    max_norm: float = 1.0
    raise_small: bool = False
    max_up_scale: float = 1.1
    max_down_scale: float = 0.9
    nonfinite: str = "skip"
    # A run whose gradients stay non-finite is dead, not unlucky: this many consecutive
    # skipped steps (clip.nonfinite=skip) raise instead of training on; 0 = never.
    max_consecutive_skips: int = 10
    # AdaGC (arXiv 2502.11034): h = min(1, lambda_rel * gamma_{t-1} / ||g||).
    lambda_rel: float = 1.05
    warmup_steps: int = 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ClipConfig":
        """Build and validate from a plain mapping (e.g. `OmegaConf.to_container(cfg.clip)`)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ClipConfigError(f"clip.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        kwargs = dict(values)
        for name in ("alpha_low", "alpha_high"):
            if name in kwargs and not isinstance(kwargs[name], Multiplier):
                kwargs[name] = _nested(Multiplier, f"clip.{name}", kwargs[name])
        if "schedule" in kwargs and not isinstance(kwargs["schedule"], Schedule):
            kwargs["schedule"] = _nested(Schedule, "clip.schedule", kwargs["schedule"])
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        _choice("clip.mode", self.mode, MODES)
        _choice("clip.semantics", self.semantics, SEMANTICS)
        _choice("clip.groups", self.groups, GROUPINGS)
        _choice("clip.schedule.kind", self.schedule.kind, SCHEDULES)
        _choice("clip.nonfinite", self.nonfinite, NONFINITE_POLICIES)
        _number("clip.beta", self.beta)
        if not 0.0 <= self.beta < 1.0:
            raise ClipConfigError(f"clip.beta={self.beta}: must lie in [0, 1)")
        for key in ("min_norm", "max_norm", "max_up_scale", "max_down_scale", "lambda_rel"):
            value = getattr(self, key)
            _number(f"clip.{key}", value)
            if value < 0:
                raise ClipConfigError(f"clip.{key}={value}: must be >= 0")
        if self.max_up_scale and self.max_up_scale < 1.0:
            raise ClipConfigError(f"clip.max_up_scale={self.max_up_scale}: a raise cap below 1 would shrink; use 0 for no cap")
        if self.max_down_scale > 1.0:
            raise ClipConfigError(f"clip.max_down_scale={self.max_down_scale}: a shrink cap above 1 would grow; use 0 for no cap")
        for key in ("warmup_steps", "max_consecutive_skips"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ClipConfigError(f"clip.{key}={value}: must be a non-negative integer")
        if self.mode == "global" and self.max_norm <= 0:
            raise ClipConfigError(f"clip.max_norm={self.max_norm}: global clipping needs a positive threshold")
        if self.mode == "aggc":
            self._validate_aggc()

    def _validate_aggc(self) -> None:
        if not self.adaptive:
            if self.max_norm <= 0:
                raise ClipConfigError(f"clip.max_norm={self.max_norm}: the fixed interval (clip.adaptive=false) needs a positive upper bound")
            if self.min_norm > self.max_norm:
                raise ClipConfigError(f"clip.min_norm={self.min_norm} exceeds clip.max_norm={self.max_norm}")
        s = self.schedule
        for key, value in (("start", s.start), ("width", s.width)):
            _number(f"clip.schedule.{key}", value)
            if not 0.0 <= value <= 1.0:
                raise ClipConfigError(f"clip.schedule.{key}={value}: a fraction of training, must lie in [0, 1]")
        if s.kind == "linear":
            if s.width <= 0:
                raise ClipConfigError(f"clip.schedule.width={s.width}: must be > 0 for a linear schedule")
            if s.start + s.width > 1.0 + 1e-9:
                raise ClipConfigError(
                    f"clip.schedule.start + clip.schedule.width = {s.start + s.width:g}: the window ends past the end of training (> 1)"
                )
        for name in ("alpha_low", "alpha_high"):
            m: Multiplier = getattr(self, name)
            _number(f"clip.{name}.init", m.init)
            if m.init < 0:
                raise ClipConfigError(f"clip.{name}.init={m.init}: must be >= 0")
            if m.late is None:
                continue
            _number(f"clip.{name}.late", m.late)
            if m.late < 0:
                raise ClipConfigError(f"clip.{name}.late={m.late}: must be >= 0")
            if self.semantics == "paper" and m.late == 0:
                raise ClipConfigError(
                    f"clip.{name}.late=0: the paper semantics would use 0 as the multiplier itself "
                    "(0 means 'same as init' only in the reference semantics); set the value or null"
                )
        if self.semantics == "paper" and self.alpha_high.init <= 0 and self.adaptive:
            raise ClipConfigError("clip.alpha_high.init=0: the paper semantics would clip every gradient to 0")

    def late(self, name: str) -> float:
        """The late value of multiplier `name`, with the 'same as init' conventions resolved."""
        m: Multiplier = getattr(self, name)
        if m.late is None or (self.semantics == "reference" and m.late == 0):
            return m.init
        return m.late


def _nested(cls, prefix: str, values: Any):
    if isinstance(values, (int, float)) and cls is Multiplier:
        return Multiplier(float(values), None)
    if not isinstance(values, Mapping):
        raise ClipConfigError(f"{prefix}: expected a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ClipConfigError(f"{prefix}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    return cls(**values)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ClipConfigError(f"{key}={value!r}: must be one of {', '.join(allowed)}")


def _number(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # value != value: NaN
        raise ClipConfigError(f"{key}={value!r}: must be a number")
