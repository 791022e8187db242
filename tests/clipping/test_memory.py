"""The clipper's own memory is O(number of groups): no per-parameter buffers, and state that
does not grow with the parameters' size or count (the paper's Table 8 shows AGGC costing up
to 5 GB more under GRPO; ours must not)."""

import torch

from aggc.clipping import GradientClipper

from ._helpers import aggc, name

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_model(layers: int, width: int) -> list[tuple[str, torch.nn.Parameter]]:
    params = []
    for layer in range(layers):
        for module in MODULES:
            for part in "AB":
                p = torch.nn.Parameter(torch.zeros(width, 8))
                p.grad = torch.randn(width, 8)
                params.append((name(module, layer, part), p))
    return params


def tensor_bytes(obj, params: set[int], seen: set[int] | None = None) -> int:
    """Bytes of every tensor reachable from `obj`'s attributes, the model's parameters and
    their gradients excluded (those belong to the model, not the clipper)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or id(obj) in params:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, params, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, params, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return tensor_bytes(vars(obj), params, seen)
    return 0


def held_bytes(layers: int, width: int) -> tuple[int, int]:
    named = lora_model(layers, width)
    clipper = GradientClipper(named, aggc(), total_steps=10)
    for _ in range(3):
        clipper.step()
    model_tensors = {id(p) for _, p in named} | {id(p.grad) for _, p in named}
    return tensor_bytes(clipper.rule, model_tensors), tensor_bytes(clipper, model_tensors)


def test_aggc_state_is_per_group_not_per_parameter():
    """7 groups: the rule's state is the same bytes for 14 or 112 tensors, and for
    tensors 16x larger; the clipper's total adds one small index entry per tensor."""
    rule_small, total_small = held_bytes(layers=1, width=16)
    rule_deep, total_deep = held_bytes(layers=8, width=16)
    rule_wide, total_wide = held_bytes(layers=1, width=256)
    assert rule_small == rule_deep == rule_wide
    assert rule_small <= 7 * 8 * 4  # a few float64 / bool values per group
    assert total_wide == total_small  # nothing scales with the parameters' size
    assert total_deep - total_small <= (112 - 14) * 8  # at most one int64 index per extra tensor
