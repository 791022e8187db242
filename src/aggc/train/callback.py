"""The one seam between the HF Trainer (and TRL's trainers, its subclasses) and the clipper.

transformers 5.x fires `on_pre_optimizer_step` once per optimizer step, after the last
micro-batch's backward (and the DDP all-reduce / FSDP reduce-scatter), right before
`optimizer.step()`. That is where the clipper runs. (`on_substep_end` fires on the
non-final micro-batches only: clipping there would see partial gradients.)
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from ..clipping import ClipConfig, GradientClipper
from ..clipping.clipper import STAT_NAMES
from .rundir import CLIPPER_STATE, MetricsLog, mark_whole, record_progress

log = logging.getLogger(__name__)

# What TRL's GRPOTrainer logs per step (and `aggc.train.grpo` adds: pg_loss), kept in the
# step's record when present; SFT logs none of them.
RL_LOG_KEYS = ("reward", "reward_std", "frac_reward_zero_std", "kl", "pg_loss", "entropy")


class ClipCallback(TrainerCallback):
    """Clip at the optimizer-step boundary, log one record per step, checkpoint the state.

    `resume_from`: the checkpoint the Trainer resumes from (its clipper state is loaded
    at train begin, so a resumed run continues bit for bit).
    """

    def __init__(self, config: ClipConfig, metrics: MetricsLog | None, resume_from: Path | None = None,
                 run_dir: Path | None = None, started: float | None = None, wandb_log=None):
        self.config = config
        self.metrics = metrics
        self.wandb_log = wandb_log  # aggc.train.wandb_log.WandbLog: the same records as wandb panels
        self.resume_from = resume_from
        self.run_dir, self.started = run_dir, started  # rank 0: this process's training time goes to the manifest
        self.clipper: GradientClipper | None = None
        self._pending: dict | None = None
        self.skipped_steps = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        check_launch(args.distributed_state.distributed_type, list(model.named_parameters()))
        self.clipper = GradientClipper(model.named_parameters(), self.config, total_steps=state.max_steps)
        if self.resume_from is not None:
            self.clipper.load_state_dict(torch.load(self.resume_from / CLIPPER_STATE, weights_only=True))
            if self.clipper.step_count != state.global_step:
                raise RuntimeError(
                    f"clipper state at step {self.clipper.step_count} does not match the checkpoint's step {state.global_step}"
                )
        log.info("clip mode %s over groups %s", self.config.mode, ", ".join(self.clipper.group_names))

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        unscale(optimizer)
        report = self.clipper.step()
        if report is None:
            return
        if report.skipped:
            self.skipped_steps += 1
            log.warning("step %d: non-finite gradient in %s: optimizer step skipped", report.step, report.nonfinite_groups)
        elif report.nonfinite_groups:
            log.warning("step %d: non-finite gradient in %s: zeroed", report.step, report.nonfinite_groups)
        self._flush()
        self._pending = step_record(report)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Trainer logs after the step it describes: global_step = that step's index + 1.
        if self._pending is not None and logs and "loss" in logs and self._pending["step"] == state.global_step - 1:
            self._pending["loss"] = logs["loss"]
            self._pending["lr"] = logs.get("learning_rate")
            self._pending.update({k: logs[k] for k in RL_LOG_KEYS if k in logs})
            self._flush()

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        tmp = checkpoint / f".{CLIPPER_STATE}.tmp"
        torch.save(self.clipper.state_dict(), tmp)
        tmp.replace(checkpoint / CLIPPER_STATE)
        mark_whole(checkpoint)  # last: only now does the checkpoint count for a resume
        if self.run_dir is not None:
            record_progress(self.run_dir, time.time() - self.started)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()

    def _flush(self) -> None:
        if self._pending is not None and self.metrics is not None:
            self.metrics.write(self._pending)
        if self._pending is not None and self.wandb_log is not None:
            self.wandb_log.write(self._pending)
        self._pending = None


# What the clipper supports: gradients that are whole and reduced when the optimizer-step
# hook fires (one process, DDP), or DTensor shards it reduces itself (FSDP2).
SUPPORTED_LAUNCHES = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.FSDP)


def check_launch(distributed_type: DistributedType, named_parameters: list) -> None:
    """Refuse the launches in which the clipper would see something other than the full
    reduced gradient: DeepSpeed (ZeRO steps inside backward and frees or moves p.grad, so
    nothing would be clipped or logged) and FSDP1 (flat plain-tensor shards, each rank would
    clip by its own shard's norm). Checked on what the run really is, however it was asked for
    (train.* keys, accelerate's environment or config file)."""
    advice = "Use FSDP2 (train.fsdp=full_shard, or accelerate launch --config_file experiments/accelerate/fsdp2.yaml) or DDP"
    if distributed_type == DistributedType.DEEPSPEED:
        raise RuntimeError(f"DeepSpeed is not supported with the clipper: ZeRO frees or moves p.grad before the "
                           f"optimizer-step hook, so nothing would be clipped or logged. {advice}")
    if distributed_type not in SUPPORTED_LAUNCHES:
        raise RuntimeError(f"launch type {distributed_type}: the clipper supports one process, DDP and FSDP2. {advice}")
    trainable = [(n, p) for n, p in named_parameters if p.requires_grad]
    if distributed_type == DistributedType.FSDP and not all(isinstance(p, DTensor) for _, p in trainable):
        plain = [n for n, p in trainable if not isinstance(p, DTensor)][:3]
        raise RuntimeError(f"FSDP without DTensor parameters ({', '.join(plain)}, ...): FSDP1's flat shards would make "
                           f"every rank clip by its own shard's norm. {advice}")


def unscale(optimizer) -> None:
    """fp16 under accelerate: the GradScaler's scale comes off the gradients before the
    clipper measures them (the Trainer unscales only when it clips itself, and its own
    clipping is off); the scaler's later step knows they are unscaled and still skips the
    update on an overflow."""
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None:
        return
    inner = optimizer
    while getattr(inner, "scaler", None) is not None:  # AcceleratedOptimizer wraps the real one
        inner = inner.optimizer
    scaler.unscale_(inner)


def step_record(report) -> dict:
    """A metrics.jsonl record: `norms` (pre-clip) is what `aggc.replay` reads."""
    by_stat = {stat: {g: values[stat] for g, values in report.groups.items()} for stat in STAT_NAMES}
    measured = [n for n in by_stat["norm"].values() if n is not None]
    return {
        "step": report.step,
        # the total over every trainable tensor, before clipping (None on a non-finite step)
        "grad_norm": None if report.nonfinite_groups else math.sqrt(sum(n * n for n in measured)),
        "norms": by_stat["norm"],
        "post_norms": by_stat["post_norm"],
        "factors": by_stat["factor"],
        "lower": by_stat["lower"],
        "upper": by_stat["upper"],
        "ema": by_stat["ema"],
        "skipped": report.skipped,
        "nonfinite_groups": report.nonfinite_groups,
    }
