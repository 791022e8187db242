"""Clip rules: from this step's norms to one factor per clipping unit.

A rule sees only norms (one per group for AGGC, one per tensor for AdaGC, one in all for
global clipping) and its own small state, never the gradients. That is why replaying a
run's logged norms (`aggc.replay`) gives exactly the factors the run applied. All math is
vectorised over units and stays on the device: no host synchronisation.
"""

from __future__ import annotations

import torch

from .config import ClipConfig

# The authors' code: norm = sqrt(sum of squares + 1e-16); comparisons and divisions with 1e-12.
REFERENCE_NORM_FLOOR = 1e-16
REFERENCE_EPS = 1e-12
# Eq. 6's epsilon (the paper names none) and torch's clip_grad_norm_ epsilon.
PAPER_EPS = 1e-6
TORCH_CLIP_EPS = 1e-6
# Rule state is a handful of numbers per unit: keep it in float64, as the authors'
# Python floats are, so long runs do not drift from the reference.
STATE_DTYPE = torch.float64


def learning_mask(present: torch.Tensor, finite: torch.Tensor, all_finite: torch.Tensor, nonfinite: str) -> torch.Tensor:
    """Units whose state may learn from this step: present and finite; under the `skip`
    and `error` policies nobody learns from a step with any non-finite group."""
    accept = present & finite
    return accept if nonfinite == "zero" else accept & all_finite


def scheduled_multiplier(init: float, late: float, p: float, kind: str, start: float, width: float) -> float:
    """Eq. 5: `init` until p = start, `late` from start + width, linear in between."""
    if kind != "linear" or p <= start:
        return init
    if p >= start + width:
        return late
    lam = (p - start) / width
    return (1.0 - lam) * init + lam * late


class ClipRule:
    """Base class: `factors(norms, accept)` -> per-unit factors and bounds for logging.

    `accept` marks the units whose state may learn from this step (present, finite and
    not skipped); the others keep their state untouched.
    """

    def __init__(self, num_units: int, device: torch.device | str = "cpu"):
        self.num_units = num_units
        self.step = 0
        self.total_steps = 0
        self.device = torch.device(device)

    def factors(self, norms: torch.Tensor, accept: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.total_steps = int(state["total_steps"])

    def _nan(self) -> torch.Tensor:
        return torch.full((self.num_units,), float("nan"), dtype=STATE_DTYPE, device=self.device)


class NoClipRule(ClipRule):
    """Clip nothing; norms are still measured so a run without clipping is logged too."""

    def factors(self, norms, accept):
        return {"factor": torch.ones_like(norms, dtype=STATE_DTYPE), "lower": self._nan(), "upper": self._nan(), "ema": self._nan()}


class GlobalNormRule(ClipRule):
    """torch's `clip_grad_norm_`: one factor min(1, max_norm / (total + 1e-6)) for all."""

    def __init__(self, num_units: int, max_norm: float, device="cpu"):
        super().__init__(num_units, device)
        self.max_norm = max_norm

    def factors(self, norms, accept):
        total = norms.to(STATE_DTYPE).square().nansum().sqrt()
        factor = torch.clamp(self.max_norm / (total + TORCH_CLIP_EPS), max=1.0)
        upper = torch.full((self.num_units,), self.max_norm, dtype=STATE_DTYPE, device=self.device)
        return {"factor": factor.expand(self.num_units), "lower": self._nan(), "upper": upper, "ema": self._nan()}


class AGGCRule(ClipRule):
    """AGGC on group norms, in the paper's equations or the authors' code (see the spec)."""

    def __init__(self, config: ClipConfig, num_units: int, device="cpu"):
        super().__init__(num_units, device)
        self.config = config
        self.ema = torch.zeros(num_units, dtype=STATE_DTYPE, device=self.device)
        # The paper starts each EMA at its first observed norm; the reference starts at 0.
        self.seen = torch.zeros(num_units, dtype=torch.bool, device=self.device)

    def multipliers(self) -> tuple[float, float]:
        """(alpha_low, alpha_high) at the current step; host-side floats from step and T."""
        c = self.config
        low, high = c.alpha_low.init, c.alpha_high.init
        if c.schedule.kind != "linear" or self.total_steps <= 0:
            return low, high
        p = self.step / self.total_steps
        s = c.schedule
        return (
            scheduled_multiplier(low, c.late("alpha_low"), p, s.kind, s.start, s.width),
            scheduled_multiplier(high, c.late("alpha_high"), p, s.kind, s.start, s.width),
        )

    def factors(self, norms, accept):
        if self.config.semantics == "reference":
            return self._reference(norms.to(STATE_DTYPE), accept)
        return self._paper(norms.to(STATE_DTYPE), accept)

    def _bounds(self, scale_source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        if not c.adaptive:
            return torch.full_like(scale_source, c.min_norm), torch.full_like(scale_source, c.max_norm)
        low, high = self.multipliers()
        lower = torch.clamp(low * scale_source, min=c.min_norm)
        upper = high * scale_source
        return lower, upper

    def _caps(self, down: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        if c.max_down_scale > 0:
            down = torch.clamp(down, min=c.max_down_scale)
        if c.max_up_scale > 0:
            up = torch.clamp(up, max=c.max_up_scale)
        return down, up

    def _reference(self, n, accept):
        c = self.config
        n = (n.square() + REFERENCE_NORM_FLOOR).sqrt()
        lower, upper = self._bounds(self.ema)  # bounds from the EMA before this step
        upper = torch.clamp(upper, min=0.0)
        shrink = (upper > 0) & (n > upper + REFERENCE_EPS)
        grow = (lower > 0) & (n < lower - REFERENCE_EPS) & c.raise_small
        down, up = self._caps(upper / (n + REFERENCE_EPS), torch.where(n > 0, lower / (n + REFERENCE_EPS), torch.ones_like(n)))
        factor = torch.where(shrink, down, torch.where(grow, up, torch.ones_like(n)))
        new_ema = c.beta * self.ema + (1.0 - c.beta) * (n * factor)  # EMA of the clipped norm
        self.ema = torch.where(accept, new_ema, self.ema)
        return {"factor": factor, "lower": lower, "upper": upper, "ema": self.ema}

    def _paper(self, n, accept):
        c = self.config
        new_ema = torch.where(self.seen, c.beta * self.ema + (1.0 - c.beta) * n, n)  # eq. 2, includes this step
        lower, upper = self._bounds(new_ema)  # eqs. 3-4
        shrink = n > upper
        grow = (n < lower) & c.raise_small
        down, up = self._caps(upper / (n + PAPER_EPS), lower / (n + PAPER_EPS))
        factor = torch.where(shrink, down, torch.where(grow, up, torch.ones_like(n)))  # eq. 6
        self.ema = torch.where(accept, new_ema, self.ema)
        self.seen = self.seen | accept
        return {"factor": factor, "lower": lower, "upper": upper, "ema": self.ema}

    def state_dict(self):
        return {**super().state_dict(), "ema": self.ema.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.ema = state["ema"].to(device=self.device, dtype=STATE_DTYPE).clone()
        self.seen = state["seen"].to(device=self.device).clone()


class AdaGCRule(ClipRule):
    """AdaGC (arXiv 2502.11034) on per-tensor norms: h = min(1, lambda_rel * gamma / ||g||),
    gamma the EMA of clipped norms. During `warmup_steps`, global clipping at `max_norm`
    applies instead and gamma tracks the (globally clipped) tensor norms.
    """

    def __init__(self, config: ClipConfig, num_units: int, device="cpu"):
        super().__init__(num_units, device)
        self.config = config
        self.gamma = torch.zeros(num_units, dtype=STATE_DTYPE, device=self.device)
        self.seen = torch.zeros(num_units, dtype=torch.bool, device=self.device)

    def factors(self, norms, accept):
        c = self.config
        n = norms.to(STATE_DTYPE)
        if self.step < c.warmup_steps:
            total = n.square().nansum().sqrt()
            factor = torch.clamp(c.max_norm / (total + TORCH_CLIP_EPS), max=1.0).expand_as(n)
            upper = torch.full_like(n, float("nan"))
        else:
            upper = c.lambda_rel * self.gamma
            # A tensor seen for the first time has no history: leave it alone, start gamma.
            factor = torch.where(self.seen, torch.clamp(upper / (n + TORCH_CLIP_EPS), max=1.0), torch.ones_like(n))
        clipped = n * factor
        new_gamma = torch.where(self.seen, c.beta * self.gamma + (1.0 - c.beta) * clipped, clipped)
        self.gamma = torch.where(accept, new_gamma, self.gamma)
        self.seen = self.seen | accept
        return {"factor": factor, "lower": torch.full_like(n, float("nan")), "upper": upper, "ema": self.gamma}

    def state_dict(self):
        return {**super().state_dict(), "gamma": self.gamma.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.gamma = state["gamma"].to(device=self.device, dtype=STATE_DTYPE).clone()
        self.seen = state["seen"].to(device=self.device).clone()


def build_rule(config: ClipConfig, num_units: int, device="cpu") -> ClipRule:
    if config.mode == "none":
        return NoClipRule(num_units, device)
    if config.mode == "global":
        return GlobalNormRule(num_units, config.max_norm, device)
    if config.mode == "aggc":
        return AGGCRule(config, num_units, device)
    return AdaGCRule(config, num_units, device)
