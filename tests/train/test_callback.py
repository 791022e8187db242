"""The clip callback's checks at the Trainer seam: fp16's GradScaler scale comes off before
the clipper measures, and launches that would hand the clipper partial gradients refuse."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType
from transformers import TrainingArguments

from aggc.clipping import ClipConfig
from aggc.train.callback import ClipCallback, check_launch


def test_fp16_scaled_gradients_are_unscaled_before_the_clipper_measures(tmp_path):
    """A real GradScaler (torch's CPU one) behind accelerate's optimizer wrapper, as the
    Trainer builds it for fp16: the clipper sees the true gradient, not 1024 times it, and
    the scaler's step afterwards neither unscales twice nor fails."""
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("q_proj", torch.nn.Linear(4, 3))
    x = torch.randn(5, 4)
    model(x).square().mean().backward()
    true_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    before = [p.detach().clone() for p in model.parameters()]
    model.zero_grad()

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    Accelerator(cpu=True)  # the optimizer wrapper's gradient state (after the arguments, which reset it)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer = AcceleratedOptimizer(torch.optim.AdamW(model.parameters(), lr=0.1), device_placement=False, scaler=scaler)
    scaler.scale(model(x).square().mean()).backward()
    state = type("State", (), {"max_steps": 1, "global_step": 0})()
    callback = ClipCallback(ClipConfig.from_dict({"mode": "none", "groups": "trainable"}), None)
    callback.on_train_begin(args, state, None, model=model)
    callback.on_pre_optimizer_step(args, state, None, optimizer=optimizer)
    assert callback._pending["norms"]["q_proj"] == pytest.approx(true_norm, rel=1e-6)
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the scaler's step still updates"


def test_without_a_scaler_nothing_is_unscaled(tmp_path):
    model = torch.nn.Sequential()
    model.add_module("q_proj", torch.nn.Linear(2, 2))
    for p in model.parameters():
        p.grad = torch.full_like(p, 2.0)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    Accelerator(cpu=True)
    optimizer = AcceleratedOptimizer(torch.optim.AdamW(model.parameters()), device_placement=False)
    state = type("State", (), {"max_steps": 1, "global_step": 0})()
    callback = ClipCallback(ClipConfig.from_dict({"mode": "none", "groups": "trainable"}), None)
    callback.on_train_begin(args, state, None, model=model)
    callback.on_pre_optimizer_step(args, state, None, optimizer=optimizer)
    assert callback._pending["norms"]["q_proj"] == pytest.approx(2.0 * 6 ** 0.5)


def params(*names):
    return [(n, torch.nn.Parameter(torch.zeros(2))) for n in names]


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU])
def test_one_process_and_ddp_are_served(kind):
    check_launch(kind, params("a.q_proj.weight"))


@pytest.mark.parametrize("kind, message", [
    (DistributedType.DEEPSPEED, "DeepSpeed is not supported"),
    (DistributedType.FSDP, "FSDP1's flat shards"),  # plain-tensor parameters under FSDP: FSDP1
    (DistributedType.XLA, "supports one process, DDP and FSDP2"),
])
def test_launches_that_hide_the_full_gradient_are_refused(kind, message):
    """What the run really is, at train begin, whatever asked for it: DeepSpeed, FSDP whose
    parameters are not FSDP2's DTensors, anything else the clipper was never checked on."""
    with pytest.raises(RuntimeError, match=f"{message}.*Use FSDP2"):
        check_launch(kind, params("a.q_proj.weight"))
