"""The non-finite policy acts on every tensor the optimizer updates, in a real GLUE run
(tiny DeBERTa, LoRA + AGGC, the task head trained through peft's modules_to_save). A NaN
is injected into the head's gradient, the tensor the clipper once left out: `skip` leaves
every weight and every Adam state as they were, `zero` zeroes the head's group only,
`error` stops the run, and too many skips in a row fail it without COMPLETED."""

import math

import pytest
import torch
from transformers import TrainerCallback

from aggc.clipping import NonFiniteGradientError
from aggc.train import glue, rundir

from .test_glue import glue_config, run_dir

pytestmark = pytest.mark.slow
HEAD = "head:classifier"


class PoisonHead(TrainerCallback):
    """Multiplies the gradient of the trainable classifier weight by NaN during the
    optimizer steps in `steps`; snapshots every trainable tensor and its Adam state after
    each step."""

    def __init__(self, steps):
        self.steps, self.active, self.after_step = set(steps), False, []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        heads = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n and n.endswith("weight")]
        assert len(heads) == 1
        heads[0].register_hook(lambda grad: grad * math.nan if self.active else grad)

    def on_step_begin(self, args, state, control, **kwargs):
        self.active = state.global_step in self.steps

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        adam = {n: {k: v.clone() for k, v in optimizer.state[p].items()} for n, p in model.named_parameters() if p in optimizer.state}
        self.after_step.append((weights, adam))


def poisoned_run(tmp_path, monkeypatch, steps, *overrides):
    poison = PoisonHead(steps)

    class Instrumented(glue.GLUETrainer):
        def __init__(self, *args, callbacks=(), **kwargs):
            super().__init__(*args, callbacks=[*callbacks, poison], **kwargs)

    monkeypatch.setattr(glue, "GLUETrainer", Instrumented)
    cfg = glue_config(tmp_path, "glue_cola_local", "strategy=aggc", "train.max_steps=4", "train.save_steps=4", *overrides)
    return cfg, poison


def test_skip_leaves_every_weight_and_adam_state_unchanged(tmp_path, monkeypatch, one_thread):
    cfg, poison = poisoned_run(tmp_path, monkeypatch, {2})
    run = glue.run(cfg, run_dir(cfg))
    records = rundir.read_metrics(run / "metrics.jsonl")
    assert [r["skipped"] for r in records] == [False, False, True, False]
    assert records[2]["nonfinite_groups"] == [HEAD] and HEAD in records[0]["norms"]
    (w1, a1), (w2, a2), (w3, _) = poison.after_step[1:]
    assert w1.keys() == w2.keys() and len(w1) > 2
    for name in w1:
        assert torch.equal(w1[name], w2[name]), f"{name} moved on a skipped step"
        assert all(torch.equal(a1[name][k], a2[name][k]) for k in a1[name]), f"{name}'s Adam state changed"
        assert torch.isfinite(w3[name]).all()
    assert any(not torch.equal(w2[n], w3[n]) for n in w2), "training goes on after the skipped step"
    assert (run / "COMPLETED").exists() and rundir.read_json(run / "manifest.json")["skipped_steps"] == 1


def test_zero_zeroes_the_head_group_and_trains_the_rest(tmp_path, monkeypatch, one_thread):
    cfg, poison = poisoned_run(tmp_path, monkeypatch, {2}, "clip.nonfinite=zero")
    run = glue.run(cfg, run_dir(cfg))
    assert rundir.read_metrics(run / "metrics.jsonl")[2]["nonfinite_groups"] == [HEAD], "only the poisoned group is non-finite"
    (w1, a1), (w2, a2) = poison.after_step[1:3]
    beta1 = 0.9  # AdamW's default: a zero gradient only decays the first moment
    for name in w1:
        decayed_only = torch.allclose(a2[name]["exp_avg"], beta1 * a1[name]["exp_avg"], rtol=1e-5, atol=0)
        zeroed = "classifier" in name or "pooler" in name  # the head:classifier group
        assert decayed_only == zeroed, f"{name}: {'zeroed' if decayed_only else 'trained'}"
        assert torch.isfinite(w2[name]).all()


def test_error_stops_the_run_without_completed(tmp_path, monkeypatch, one_thread):
    cfg, _ = poisoned_run(tmp_path, monkeypatch, {1}, "clip.nonfinite=error")
    with pytest.raises(NonFiniteGradientError, match=HEAD):
        glue.run(cfg, run_dir(cfg))
    assert not (run_dir(cfg) / "COMPLETED").exists()


def test_consecutive_skips_fail_the_run_without_completed(tmp_path, monkeypatch, one_thread):
    cfg, _ = poisoned_run(tmp_path, monkeypatch, {1, 2, 3}, "clip.max_consecutive_skips=2")
    with pytest.raises(NonFiniteGradientError, match="last 2 optimizer steps"):
        glue.run(cfg, run_dir(cfg))
    assert not (run_dir(cfg) / "COMPLETED").exists() and not (run_dir(cfg) / "final").exists()

