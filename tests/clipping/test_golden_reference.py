"""The `reference` semantics reproduces the authors' clipper on recorded gradients.

Fixtures: tests/fixtures/golden (copied from shared/golden/aggc_reference, see its README):
gradients of 28 LoRA tensors over 200 steps and the authors' `PerModuleGradClipper` trace.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aggc.clipping import ClipConfig, GradientClipper, Multiplier, Schedule

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"


def config_from_authors(options: dict) -> ClipConfig:
    """Map the authors' option names to ours (the golden README gives the mapping)."""
    return ClipConfig(
        mode="aggc",
        semantics="reference",
        groups="lora",
        beta=options.get("ema_beta", 0.98),  # the authors' default
        adaptive=options["auto_bounds"],
        alpha_low=Multiplier(options.get("low_mult", 0.95), options.get("low_mult_late", 0.0)),
        alpha_high=Multiplier(options.get("high_mult", 0.6), options.get("high_mult_late", 0.0)),
        schedule=Schedule(
            kind=options.get("bounds_schedule", "none"),
            start=options.get("bounds_switch_ratio", 0.4),
            width=options.get("bounds_transition_ratio", 0.3),
        ),
        min_norm=options["min_norm"],
        max_norm=options.get("max_norm", 1.0),
        raise_small=options["raise_small"],
        max_up_scale=options.get("max_up_scale", 0.0),
        max_down_scale=options.get("max_down_scale", 0.0),
    )


@pytest.mark.parametrize("trace_name", ["trace_lora_official", "trace_static_bounds"])
def test_reference_reproduces_golden_scale_and_ema(trace_name):
    """Every group's factor and EMA at every step match the authors' trace to 1e-5."""
    trace = json.loads((GOLDEN / f"{trace_name}.json").read_text())
    grads = np.load(GOLDEN / "grads.npz")
    config = config_from_authors(trace["config"])
    config.validate()
    params = [(name, torch.nn.Parameter(torch.zeros(grads[name].shape[1:]))) for name in trace["param_names"]]
    clipper = GradientClipper(params, config, total_steps=trace["total_steps"])
    assert clipper.group_names == list(trace["steps"][0])

    for t, expected in enumerate(trace["steps"]):
        for name, p in params:
            p.grad = torch.from_numpy(grads[name][t]).clone()
        report = clipper.step()
        for group, want in expected.items():
            got = report.groups[group]
            for key in ("scale", "ema", "norm", "post_norm"):
                ours = got["factor" if key == "scale" else key]
                assert ours == pytest.approx(want[key], rel=1e-5, abs=1e-12), (t, group, key)
            for key in ("lower", "upper"):
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-12), (t, group, key)
        # the gradients themselves were scaled by the factor
        for group in expected:
            members = [p for p, g in zip(clipper.params, clipper.group_of_tensor) if clipper.group_names[g] == group]
            post = torch.sqrt(sum(p.grad.double().square().sum() for p in members)).item()
            assert post == pytest.approx(expected[group]["post_norm"], rel=1e-5)
