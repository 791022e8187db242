"""What a person reads on the console while a run trains: one progress bar (the latest loss
as its postfix, not one printed dict per step) and, at the end, a summary of the run and
of what the clipper did to each group."""

from __future__ import annotations

import math
import statistics

from transformers import ProgressCallback


class StepProgress(ProgressCallback):
    """The Trainer's progress bar; a log shows as the bar's postfix (loss, reward), and only an
    evaluation's metrics (GLUE's per-epoch dev scores) as a line of their own."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar is not None and logs):
            return
        shown = {k: f"{logs[k]:.4g}" for k in ("loss", "reward", "kl") if _number(logs.get(k))}
        if shown:
            self.training_bar.set_postfix(shown, refresh=False)
        scores = {k: f"{v:.4g}" if _number(v) else v for k, v in logs.items() if k.startswith("eval_")}
        if scores:
            self.training_bar.write(f"step {state.global_step}: " + ", ".join(f"{k} {v}" for k, v in scores.items()))


def quiet_loading() -> None:
    """transformers' own bars (loading weights, writing model shards) off: the training bar
    is the one the console shows. Downloads from the hub keep theirs (huggingface_hub's)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def use_one_progress_bar(trainer) -> None:
    """Swap the Trainer's progress callback for `StepProgress` (where it shows one)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(StepProgress)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summary(records: list[dict], seconds: float, run_dir) -> str:
    """The end of a run in a few lines: steps, time, final loss, and per group the median
    clip factor, the share of steps clipped down (factor < 1) and raised (factor > 1), and
    the steps with a non-finite gradient."""
    losses = [r["loss"] for r in records if _number(r.get("loss"))]
    lines = [f"trained {len(records)} steps in {seconds / 60:.1f} min; final loss "
             + (f"{losses[-1]:.4g} (mean {statistics.fmean(losses):.4g})" if losses else "n/a")
             + (f"; {sum(bool(r.get('skipped')) for r in records)} steps skipped" if any(r.get("skipped") for r in records) else "")]
    groups = list(dict.fromkeys(g for r in records for g in (r.get("factors") or {})))
    if groups:
        width = max(len("group"), *(len(g) for g in groups))
        lines.append(f"{'group':<{width}}  median factor  clipped down  raised  non-finite steps")
        for g in groups:
            factors = [r["factors"][g] for r in records if _number((r.get("factors") or {}).get(g))]
            nonfinite = sum(g in (r.get("nonfinite_groups") or []) for r in records)
            if not factors:
                lines.append(f"{g:<{width}}  {'n/a':>13}  {'':>12}  {'':>6}  {nonfinite:>16}")
                continue
            down = sum(f < 1 for f in factors) / len(factors)
            up = sum(f > 1 for f in factors) / len(factors)
            lines.append(f"{g:<{width}}  {statistics.median(factors):>13.4g}  {down:>12.0%}  {up:>6.0%}  {nonfinite:>16}")
    lines.append(f"run directory: {run_dir}")
    return "\n".join(lines)
