"""The `paper` semantics follows eqs. 1-7, checked on hand-computed cases."""

import math

import pytest

from aggc.clipping import GradientClipper, scheduled_multiplier
from aggc.clipping.rules import PAPER_EPS

from ._helpers import aggc, lora_params, name

PAPER = dict(semantics="paper", beta=0.5, min_norm=0.1, raise_small=True, max_up_scale=0, max_down_scale=0,
             alpha_low={"init": 0.5, "late": 0.8}, alpha_high={"init": 2.0, "late": 1.5},
             schedule={"kind": "linear", "start": 0.25, "width": 0.5})


def test_eq5_schedule_points():
    """alpha = init up to s, late from s+w, linear in between (lambda = (p-s)/w)."""
    f = lambda p: scheduled_multiplier(2.0, 1.0, p, "linear", 0.2, 0.4)
    assert f(0.0) == 2.0 and f(0.2) == 2.0
    assert f(0.4) == pytest.approx(1.5)
    assert f(0.6) == 1.0 and f(1.0) == 1.0
    assert scheduled_multiplier(2.0, 1.0, 0.9, "none", 0.2, 0.4) == 2.0


def test_eq1_to_eq7_by_hand():
    # q_proj: two tensors, norm sqrt(3^2 + 4^2) = 5; k_proj: one tensor of norm 1.
    params = lora_params({name("q_proj", 0): [3.0], name("q_proj", 1): [4.0], name("k_proj"): [1.0]})
    clipper = GradientClipper(params, aggc(**PAPER), total_steps=4)

    # t=0: S starts at the first norm -> S=n, p=0 -> alphas (0.5, 2.0): n in [0.5n, 2n] -> factor 1.
    r0 = clipper.step().groups
    assert r0["q_proj"]["norm"] == pytest.approx(5.0)
    assert r0["q_proj"]["factor"] == 1.0 and r0["q_proj"]["ema"] == pytest.approx(5.0)

    # t=1: q norm 20 (spike), k norm 0.01 (vanishing). p = 1/4 = s -> alphas still init.
    params[0][1].grad.fill_(12.0); params[1][1].grad.fill_(16.0); params[2][1].grad.fill_(0.01)
    r1 = clipper.step().groups
    s_q = 0.5 * 5.0 + 0.5 * 20.0  # eq. 2 includes this step's norm: 12.5
    assert r1["q_proj"]["ema"] == pytest.approx(s_q)
    assert r1["q_proj"]["upper"] == pytest.approx(2.0 * s_q)  # eq. 4: 25 -> 20 is inside
    assert r1["q_proj"]["factor"] == 1.0
    s_k = 0.5 * 1.0 + 0.5 * 0.01
    lower_k = max(0.1, 0.5 * s_k)  # eq. 3
    assert r1["k_proj"]["lower"] == pytest.approx(lower_k)
    assert r1["k_proj"]["factor"] == pytest.approx(lower_k / (0.01 + PAPER_EPS))  # eq. 6, raise
    assert params[2][1].grad.item() == pytest.approx(0.01 * lower_k / (0.01 + PAPER_EPS), rel=1e-6)  # eq. 7

    # t=2: p = 0.5 -> lambda = 0.5 -> alpha_high = 1.75, alpha_low = 0.65. q norm 100.
    params[0][1].grad.fill_(60.0); params[1][1].grad.fill_(80.0)
    r2 = clipper.step().groups
    s_q2 = 0.5 * s_q + 0.5 * 100.0
    upper = 1.75 * s_q2
    assert r2["q_proj"]["upper"] == pytest.approx(upper)
    assert r2["q_proj"]["factor"] == pytest.approx(upper / (100.0 + PAPER_EPS))
    post = math.hypot(params[0][1].grad.item(), params[1][1].grad.item())
    assert post == pytest.approx(upper, rel=1e-6)  # eq. 7: the group lands on U


def test_paper_fixed_interval_when_not_adaptive():
    params = lora_params({name("v_proj"): [30.0, 40.0]})
    clipper = GradientClipper(params, aggc(**{**PAPER, "adaptive": False, "min_norm": 1.0, "max_norm": 10.0}))
    r = clipper.step().groups["v_proj"]
    assert (r["lower"], r["upper"]) == (1.0, 10.0)
    assert r["factor"] == pytest.approx(10.0 / (50.0 + PAPER_EPS))
