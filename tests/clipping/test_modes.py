"""Global / none / AdaGC modes, non-finite policies, missing gradients, and state."""

import copy

import pytest
import torch

from aggc.clipping import ClipConfig, GradientClipper, NonFiniteGradientError

from ._helpers import aggc, lora_params, name

GRADS = {name("q_proj", 0): [3.0, 4.0], name("q_proj", 1): [1.0, 2.0], name("v_proj"): [10.0, -10.0], name("down_proj"): [0.5]}


def test_global_mode_equals_torch_clip_grad_norm():
    ours = lora_params(GRADS)
    theirs = lora_params(GRADS)
    GradientClipper(ours, ClipConfig.from_dict({"mode": "global", "max_norm": 2.0})).step()
    torch.nn.utils.clip_grad_norm_([p for _, p in theirs], 2.0, foreach=True)
    for (_, a), (_, b) in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0)


def test_none_mode_measures_but_does_not_touch():
    params = lora_params(GRADS)
    report = GradientClipper(params, ClipConfig.from_dict({"mode": "none"})).step()
    assert report.groups["v_proj"]["norm"] == pytest.approx(200 ** 0.5)
    assert report.groups["v_proj"]["factor"] == 1.0
    assert params[2][1].grad.tolist() == [10.0, -10.0]


def test_adagc_clips_each_tensor_against_its_own_history():
    """h = min(1, lambda_rel * gamma_{t-1} / ||g||), gamma the EMA of clipped norms."""
    params = lora_params({name("q_proj"): [1.0], name("k_proj"): [1.0]})
    clipper = GradientClipper(params, ClipConfig.from_dict({"mode": "adagc", "beta": 0.5, "lambda_rel": 1.05, "groups": "lora"}))
    clipper.step()  # first sight: no history, gamma = 1
    params[0][1].grad.fill_(10.0)  # spike in q only
    params[1][1].grad.fill_(1.0)
    report = clipper.step()
    assert params[0][1].grad.item() == pytest.approx(1.05, rel=1e-5)
    assert params[1][1].grad.item() == 1.0  # k unaffected by q's spike: no spill-over
    assert report.groups["q_proj"]["factor"] == pytest.approx(0.105, rel=1e-5)


def test_adagc_warmup_is_global_clipping():
    params = lora_params({name("q_proj"): [3.0], name("k_proj"): [4.0]})
    GradientClipper(params, ClipConfig.from_dict({"mode": "adagc", "warmup_steps": 2, "max_norm": 1.0})).step()
    assert [p.grad.item() for _, p in params] == pytest.approx([0.6, 0.8], rel=1e-5)


def test_aggc_shrinks_only_the_spiking_group():
    """The spill-over AGGC exists to avoid: a spike in v_proj leaves q_proj unscaled."""
    cfg = aggc(semantics="paper", beta=0.9, raise_small=False, max_up_scale=0, max_down_scale=0,
               alpha_low={"init": 0.5, "late": None}, alpha_high={"init": 1.5, "late": None})
    params = lora_params({name("q_proj"): [1.0], name("v_proj"): [1.0]})
    clipper = GradientClipper(params, cfg)
    for _ in range(5):
        for _, p in params:
            p.grad = torch.ones(1)
        clipper.step()
    params[1][1].grad = torch.full((1,), 50.0)
    params[0][1].grad = torch.ones(1)
    clipper.step()
    assert params[0][1].grad.item() == 1.0
    assert params[1][1].grad.item() == pytest.approx(1.5 * (0.9 * 1.0 + 0.1 * 50.0))  # U = alpha_high * S


@pytest.mark.parametrize("policy", ["skip", "zero", "error"])
def test_nonfinite_policy(policy):
    params = lora_params({name("q_proj"): [1.0], name("v_proj"): [1.0]})
    clipper = GradientClipper(params, aggc(nonfinite=policy))
    clipper.step()
    ema_before = clipper.rule.ema.clone()
    params[1][1].grad = torch.tensor([float("nan")])
    params[0][1].grad = torch.tensor([2.0])
    if policy == "error":
        with pytest.raises(NonFiniteGradientError, match="v_proj"):
            clipper.step()
        return
    report = clipper.step()
    assert report.nonfinite_groups == ["v_proj"]
    assert not torch.isnan(clipper.rule.ema).any(), "a NaN must never reach the EMA"
    if policy == "skip":
        assert report.skipped and all(p.grad is None for _, p in params)  # optimizer skips them
        assert torch.equal(clipper.rule.ema, ema_before)
    else:
        assert not report.skipped and params[1][1].grad.item() == 0.0
        assert clipper.rule.ema[1] == ema_before[1] and clipper.rule.ema[0] != ema_before[0]


def test_tensors_without_gradient_are_skipped():
    params = lora_params({name("q_proj"): [1.0], name("k_proj"): [2.0]})
    params[1][1].grad = None
    clipper = GradientClipper(params, aggc())
    report = clipper.step()
    assert report.groups["k_proj"]["norm"] is None and report.groups["q_proj"]["norm"] == pytest.approx(1.0, rel=1e-6)
    assert clipper.rule.ema[1] == 0.0  # untouched
    for _, p in params:
        p.grad = None
    assert clipper.step() is None


def test_state_dict_round_trip_continues_identically():
    """Save after 3 of 6 steps, restore into a fresh clipper: the last 3 steps are identical."""
    def run(clipper, params, steps):
        out = []
        for t in steps:
            for i, (_, p) in enumerate(params):
                p.grad = torch.full_like(p, float((t * 7 + i * 3) % 5 + 0.5))
            out.append(clipper.step().groups)
        return out

    cfg = aggc()
    params = lora_params(GRADS)
    expected = run(GradientClipper(params, cfg, total_steps=6), params, range(6))

    params = lora_params(GRADS)
    first = GradientClipper(params, cfg, total_steps=6)
    run(first, params, range(3))
    state = copy.deepcopy(first.state_dict())
    params = lora_params(GRADS)
    resumed = GradientClipper(params, cfg)
    resumed.load_state_dict(state)
    assert resumed.step_count == 3 and resumed.rule.total_steps == 6
    assert run(resumed, params, range(3, 6)) == expected[3:]


def test_state_from_other_groups_is_refused():
    state = GradientClipper(lora_params(GRADS), aggc()).state_dict()
    other = GradientClipper(lora_params({name("q_proj"): [1.0]}), aggc())
    with pytest.raises(ValueError, match="different parameter groups"):
        other.load_state_dict(state)


def test_clip_does_not_synchronise_with_the_host(monkeypatch):
    """The hot path never calls .item() / .tolist() / float(tensor); step() does once."""
    calls = []
    for method in ("item", "tolist", "__float__", "__bool__"):
        original = getattr(torch.Tensor, method)
        def spy(self, *a, _m=method, _o=original, **k):
            calls.append(_m)
            return _o(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, method, spy)
    for cfg in (aggc(), aggc(semantics="paper", max_up_scale=0, max_down_scale=0), ClipConfig.from_dict({"mode": "adagc"}),
                ClipConfig.from_dict({"mode": "global"})):
        clipper = GradientClipper(lora_params(GRADS), cfg, total_steps=10)
        calls.clear()
        clipper.clip()
        assert calls == [], (cfg.mode, calls)
        clipper.params[0].grad = torch.ones(2)
        calls.clear()
        clipper.step()
        assert calls == ["tolist"], calls  # one transfer per step, for the policy and the log


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["global", "aggc", "adagc", "none"])
def test_every_floating_gradient_dtype_is_clipped(mode, dtype):
    """float64 (a double-precision model) and half-precision gradients are measured like
    float32 ones, alone or mixed in one model, and scaled in their own dtype."""
    values = {name("q_proj"): [3.0, 4.0], name("v_proj"): [6.0, 8.0]}
    params = lora_params(values)
    params[0][1].data = params[0][1].data.to(dtype)
    params[0][1].grad = params[0][1].grad.to(dtype)  # one group in `dtype`, the other float32: mixed
    report = GradientClipper(params, ClipConfig.from_dict({"mode": mode, "groups": "lora"})).step()
    assert report.groups["q_proj"]["norm"] == pytest.approx(5.0, rel=1e-3)
    assert report.groups["v_proj"]["norm"] == pytest.approx(10.0, rel=1e-6)
    assert params[0][1].grad.dtype == dtype and torch.isfinite(params[0][1].grad).all()
    all_one = lora_params({name("q_proj"): [3.0, 4.0]})
    all_one[0][1].data = all_one[0][1].data.to(dtype)
    all_one[0][1].grad = all_one[0][1].grad.to(dtype)
    assert GradientClipper(all_one, ClipConfig.from_dict({"mode": mode, "groups": "lora"})).step().groups["q_proj"]["norm"] == pytest.approx(5.0, rel=1e-3)


def test_consecutive_skips_stop_the_run_and_a_finite_step_resets_the_count():
    """clip.max_consecutive_skips=3: two NaN steps skip, a finite one resets the count,
    the third NaN step in a row raises; the count survives a save and restore."""
    params = lora_params({name("q_proj"): [1.0]})
    clipper = GradientClipper(params, aggc(max_consecutive_skips=3))

    def step(value):
        params[0][1].grad = torch.tensor([value])
        return clipper.step()

    assert step(float("nan")).skipped and step(float("inf")).skipped
    assert not step(1.0).skipped
    step(float("nan"))
    step(float("nan"))
    restored = GradientClipper(params, aggc(max_consecutive_skips=3))
    restored.load_state_dict(copy.deepcopy(clipper.state_dict()))
    clipper = restored
    with pytest.raises(NonFiniteGradientError, match="last 3 optimizer steps"):
        step(float("nan"))


def test_consecutive_skip_limit_zero_never_stops():
    params = lora_params({name("q_proj"): [1.0]})
    clipper = GradientClipper(params, aggc(max_consecutive_skips=0))
    for _ in range(20):
        params[0][1].grad = torch.tensor([float("nan")])
        assert clipper.step().skipped
