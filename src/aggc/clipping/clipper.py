"""The gradient clipper: measure group norms, ask the rule for factors, scale in place.

Called once per optimizer step on the fully accumulated, fully reduced gradient (after
backward, before `optimizer.step()`):

- norms come from one fused `torch._foreach_norm` over all gradients; per-group sums of
  squares are an `index_add_` on the device;
- under FSDP2 the gradients are DTensor shards: the squared local norms are summed over
  the mesh with one all-reduce, so every rank sees the true group norm;
- under DDP the gradients are already replicated and the local norm is the global one;
- factors are applied with one `torch._foreach_mul_` per group, on the device.

`clip()` never synchronises with the host. `step()` = `clip()` plus one transfer of the
step's statistics, which the non-finite policy and the per-step log need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard

from .config import ClipConfig
from .grouping import group_parameters
from .rules import STATE_DTYPE, build_rule, learning_mask

STAT_NAMES = ("norm", "post_norm", "factor", "lower", "upper", "ema")


class NonFiniteGradientError(FloatingPointError):
    """Raised under `clip.nonfinite=error` when a group's gradient norm is NaN or Inf, and
    under `skip` when `clip.max_consecutive_skips` steps in a row were skipped."""


@dataclass
class StepReport:
    """One optimizer step as the log sees it: per group `{norm, post_norm, factor,
    lower, upper, ema}` (None where not applicable), and whether the step was skipped."""

    step: int
    groups: dict[str, dict[str, float | None]]
    nonfinite_groups: list[str]
    skipped: bool

    def as_record(self) -> dict:
        return {"step": self.step, "groups": self.groups, "nonfinite_groups": self.nonfinite_groups, "skipped": self.skipped}


class GradientClipper:
    """Clip a model's gradients by group. Construct once; call `step()` every optimizer step."""

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        config: ClipConfig,
        total_steps: int = 0,
    ):
        self.config = config
        grouped = group_parameters(named_parameters, config.groups)
        self.group_names = list(grouped)
        self.param_names = [name for members in grouped.values() for name, _ in members]
        self.params = [p for members in grouped.values() for _, p in members]
        self.group_of_tensor = [g for g, members in enumerate(grouped.values()) for _ in members]
        device = self.params[0].device
        self._group_index = torch.tensor(self.group_of_tensor, device=device)
        # AdaGC clips each tensor on its own; everything else clips whole groups.
        self.per_tensor = config.mode == "adagc"
        units = len(self.params) if self.per_tensor else len(self.group_names)
        self.rule = build_rule(config, units, device)
        self.rule.total_steps = total_steps
        self.consecutive_skips = 0

    # -- state -------------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        return self.rule.step

    def set_total_steps(self, total_steps: int) -> None:
        self.rule.total_steps = int(total_steps)

    def state_dict(self) -> dict:
        return {"mode": self.config.mode, "group_names": list(self.group_names), "param_names": list(self.param_names),
                "consecutive_skips": self.consecutive_skips, **self.rule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.config.mode:
            raise ValueError(f"clipper state is for clip.mode={state.get('mode')!r}, this run uses {self.config.mode!r}")
        if list(state["group_names"]) != self.group_names or list(state["param_names"]) != self.param_names:
            raise ValueError("clipper state was saved for different parameter groups (model or clip.groups changed)")
        self.rule.load_state_dict(state)
        self.consecutive_skips = int(state.get("consecutive_skips", 0))

    # -- the hot path ------------------------------------------------------------------------
    def clip(self) -> torch.Tensor | None:
        """Scale the gradients in place; return the step's statistics, one row per name
        in `STAT_NAMES` and a last row of finite flags, `[7, num_groups]` on the device,
        without synchronising. None when no tensor has a gradient this step."""
        present = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not present:
            return None
        grads = [_local(self.params[i].grad) for i in present]
        index = self._group_index if len(present) == len(self.params) else self._group_index[present]
        tensor_norms = self._tensor_norms(grads, [self.params[i].grad for i in present])

        num_groups = len(self.group_names)
        group_sq = torch.zeros(num_groups, dtype=STATE_DTYPE, device=index.device).index_add_(0, index, tensor_norms.square())
        group_has = torch.zeros(num_groups, dtype=torch.bool, device=index.device)
        group_has[index] = True
        group_norms = group_sq.sqrt()
        finite = torch.isfinite(group_norms) | ~group_has

        if self.per_tensor:
            unit_norms = torch.zeros(len(self.params), dtype=STATE_DTYPE, device=index.device)
            unit_norms[present] = tensor_norms
            unit_present = torch.zeros(len(self.params), dtype=torch.bool, device=index.device)
            unit_present[present] = True
            unit_finite = torch.isfinite(unit_norms)
        else:
            unit_norms, unit_present, unit_finite = torch.where(group_has, group_norms, 0.0), group_has, finite
        accept = learning_mask(unit_present, unit_finite, finite.all(), self.config.nonfinite)
        out = self.rule.factors(unit_norms, accept)
        self.rule.advance()

        factor = out["factor"]
        tensor_factor = factor[present] if self.per_tensor else factor[index]
        post_sq = torch.zeros(num_groups, dtype=STATE_DTYPE, device=index.device).index_add_(0, index, (tensor_norms * tensor_factor).square())
        post_norms = post_sq.sqrt()
        self._apply(grads, [self.group_of_tensor[i] for i in present], tensor_factor)

        if self.per_tensor:  # report per group: the effective factor and no interval
            nan = torch.full((num_groups,), math.nan, dtype=STATE_DTYPE, device=index.device)
            group_factor = post_norms / group_norms
            lower = upper = ema = nan
        else:
            group_factor, lower, upper, ema = factor, out["lower"], out["upper"], out["ema"]
        stats = torch.stack([group_norms, post_norms, group_factor, lower, upper, ema])
        stats = torch.where(group_has, stats, math.nan)  # a masked assignment would sync on GPU
        return torch.cat([stats, finite.to(STATE_DTYPE).unsqueeze(0)])

    def _tensor_norms(self, local_grads: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
        norms = _norms(local_grads)
        sharded = [i for i, g in enumerate(grads) if isinstance(g, DTensor)]
        if not sharded:
            return norms
        # FSDP2: sum squared shard norms over the mesh, then take the root.
        mesh = grads[sharded[0]].device_mesh
        for i in sharded:
            placements = grads[i].placements
            if grads[i].device_mesh != mesh or not all(isinstance(pl, Shard) for pl in placements):
                raise NotImplementedError(
                    f"gradient of {self.param_names[i]} has placements {placements}: only fully sharded (FSDP2 Shard) DTensors are supported"
                )
        squares = norms.square()
        shard_sq = squares[sharded].clone()
        dist.all_reduce(shard_sq, op=dist.ReduceOp.SUM, group=mesh.get_group())
        squares[sharded] = shard_sq
        return squares.sqrt()

    def _apply(self, grads: list[torch.Tensor], groups: list[int], tensor_factor: torch.Tensor) -> None:
        if self.config.mode == "none":
            return
        factors = tensor_factor.to(torch.float32)
        if self.per_tensor:
            for grad, f in zip(grads, factors.unbind()):
                grad.mul_(f.to(grad.dtype))
            return
        # One fused multiply per group, with the group's factor as a device scalar.
        by_group: dict[int, list[int]] = {}
        for pos, g in enumerate(groups):
            by_group.setdefault(g, []).append(pos)
        for positions in by_group.values():
            members = [grads[p] for p in positions]
            torch._foreach_mul_(members, factors[positions[0]].to(members[0].dtype))

    # -- one step, with the host-side policy -------------------------------------------------
    def step(self) -> StepReport | None:
        """`clip()`, then one host transfer: apply the non-finite policy, build the log."""
        step = self.rule.step
        out = self.clip()
        if out is None:
            return None
        *stats, finite = out.tolist()  # the step's single device->host transfer
        bad = [name for name, ok in zip(self.group_names, finite) if ok == 0.0]
        skipped = False
        if bad:
            policy = self.config.nonfinite
            if policy == "error":
                raise NonFiniteGradientError(f"non-finite gradient norm at step {step} in groups {bad}")
            if policy == "skip":
                for p in self.params:  # optimizers skip tensors without a gradient
                    p.grad = None
                skipped = True
                self.consecutive_skips += 1
                limit = self.config.max_consecutive_skips
                if limit and self.consecutive_skips >= limit:
                    raise NonFiniteGradientError(
                        f"step {step}: the last {self.consecutive_skips} optimizer steps all had non-finite gradients "
                        f"(now in groups {bad}) and were skipped (clip.max_consecutive_skips={limit}): the model is "
                        "not training. Lower the learning rate or check the data; clip.max_consecutive_skips=0 never stops"
                    )
            else:  # zero
                for p, g in zip(self.params, self.group_of_tensor):
                    if p.grad is not None and self.group_names[g] in bad:
                        p.grad.zero_()
        if not skipped:
            self.consecutive_skips = 0
        groups = {
            name: {stat: _finite_or_none(stats[k][g]) for k, stat in enumerate(STAT_NAMES)}
            for g, name in enumerate(self.group_names)
        }
        return StepReport(step=step, groups=groups, nonfinite_groups=bad, skipped=skipped)


def _norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of every tensor, in STATE_DTYPE: one fused `_foreach_norm` per gradient
    dtype, accumulated in float32 (float64 gradients in float64: `_foreach_norm` refuses to
    narrow them)."""
    if all(g.dtype == grads[0].dtype for g in grads):  # the common case: one fused call
        return _norms_of_one_dtype(grads)
    out = torch.empty(len(grads), dtype=STATE_DTYPE, device=grads[0].device)
    for dtype in {g.dtype for g in grads}:
        positions = [i for i, g in enumerate(grads) if g.dtype == dtype]
        out[positions] = _norms_of_one_dtype([grads[i] for i in positions])
    return out


def _norms_of_one_dtype(grads: list[torch.Tensor]) -> torch.Tensor:
    accumulate = torch.float64 if grads[0].dtype == torch.float64 else torch.float32
    return torch.stack(torch._foreach_norm(grads, 2, dtype=accumulate)).to(STATE_DTYPE)


def _local(grad: torch.Tensor) -> torch.Tensor:
    return grad.to_local() if isinstance(grad, DTensor) else grad


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
