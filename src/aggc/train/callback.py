"""The one seam between the HF Trainer (and TRL's trainers, its subclasses) and the clipper.

transformers 5.x fires `on_pre_optimizer_step` once per optimizer step, after the last
micro-batch's backward (and the DDP all-reduce / FSDP reduce-scatter), right before
`optimizer.step()`. That is where the clipper runs. (`on_substep_end` fires on the
non-final micro-batches only: clipping there would see partial gradients.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..clipping import ClipConfig, GradientClipper
from ..clipping.clipper import STAT_NAMES
from .rundir import CLIPPER_STATE, MetricsLog

log = logging.getLogger(__name__)

# What TRL's GRPOTrainer logs per step (and `aggc.train.grpo` adds: pg_loss), kept in the
# step's record when present; SFT logs none of them.
RL_LOG_KEYS = ("reward", "reward_std", "frac_reward_zero_std", "kl", "pg_loss", "entropy")


class ClipCallback(TrainerCallback):
    """Clip at the optimizer-step boundary, log one record per step, checkpoint the state.

    `resume_from`: the checkpoint the Trainer resumes from (its clipper state is loaded
    at train begin, so a resumed run continues bit for bit).
    """

    def __init__(self, config: ClipConfig, metrics: MetricsLog | None, resume_from: Path | None = None):
        self.config = config
        self.metrics = metrics
        self.resume_from = resume_from
        self.clipper: GradientClipper | None = None
        self._pending: dict | None = None
        self.skipped_steps = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.clipper = GradientClipper(model.named_parameters(), self.config, total_steps=state.max_steps)
        if self.resume_from is not None:
            self.clipper.load_state_dict(torch.load(self.resume_from / CLIPPER_STATE, weights_only=False))
            if self.clipper.step_count != state.global_step:
                raise RuntimeError(
                    f"clipper state at step {self.clipper.step_count} does not match the checkpoint's step {state.global_step}"
                )
        log.info("clip mode %s over groups %s", self.config.mode, ", ".join(self.clipper.group_names))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
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
            self._pending["grad_norm"] = logs.get("grad_norm")
            self._pending.update({k: logs[k] for k in RL_LOG_KEYS if k in logs})
            self._flush()

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        tmp = checkpoint / f".{CLIPPER_STATE}.tmp"
        torch.save(self.clipper.state_dict(), tmp)
        tmp.replace(checkpoint / CLIPPER_STATE)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()

    def _flush(self) -> None:
        if self._pending is not None and self.metrics is not None:
            self.metrics.write(self._pending)
        self._pending = None


def step_record(report) -> dict:
    """A metrics.jsonl record: `norms` (pre-clip) is what `aggc.replay` reads."""
    by_stat = {stat: {g: values[stat] for g, values in report.groups.items()} for stat in STAT_NAMES}
    return {
        "step": report.step,
        "norms": by_stat["norm"],
        "post_norms": by_stat["post_norm"],
        "factors": by_stat["factor"],
        "lower": by_stat["lower"],
        "upper": by_stat["upper"],
        "ema": by_stat["ema"],
        "skipped": report.skipped,
        "nonfinite_groups": report.nonfinite_groups,
    }
