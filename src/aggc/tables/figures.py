"""Per-group gradient-norm curves (the paper's Figures 1, 2 and 7: LoRA vs AGGC) from the
runs' `metrics.jsonl`: the norm each group's update was made with (post-clip)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..train.rundir import read_metrics  # noqa: E402


def group_norm_figure(panels: list[tuple[str, Path]], out: Path) -> Path:
    """One panel per (title, run dir), one line per group, shared y axis."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (title, run) in zip(axes[0], panels):
        records = read_metrics(run / "metrics.jsonl")
        steps = [r["step"] for r in records]
        for group in records[0]["post_norms"]:
            ax.plot(steps, [r["post_norms"].get(group) for r in records], label=group, linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("group gradient norm (after clipping)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def sweep_figure(panels: list[dict], x_label: str, out: Path) -> Path:
    """One panel per (model, benchmark): a line per series over the swept value (mean with
    its 95% CI), the paper's points as crosses, the reference row as horizontal lines.

    A panel is {"title", "series": {name: [(x, mean | None, ci | None, paper | None)]},
    "reference": (label, ours | None, paper | None) | None}.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for i, (name, points) in enumerate(panel["series"].items()):
            color = f"C{i}"
            ours = [(x, m, ci or 0.0) for x, m, ci, _ in points if m is not None]
            if ours:
                xs, means, cis = zip(*ours)
                ax.errorbar(xs, means, yerr=cis, color=color, marker="o", capsize=3, label=f"{name} (ours)")
            paper = [(x, p) for x, _, _, p in points if p is not None]
            if paper:
                ax.plot(*zip(*paper), color=color, marker="x", markersize=9, linestyle="none", label=f"{name} (paper)")
        if panel["reference"]:
            label, ours, paper = panel["reference"]
            if ours is not None:
                ax.axhline(ours, color="gray", linestyle="--", linewidth=1, label=f"{label} (ours)")
            if paper is not None:
                ax.axhline(paper, color="gray", linestyle=":", linewidth=1, label=f"{label} (paper)")
        ax.set_xscale("log", base=2)
        ax.set_title(panel["title"])
        ax.set_xlabel(x_label)
    axes[0][0].set_ylabel("score")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


GRPO_CURVES = (("reward", "reward (mean over completions)"), ("kl", "KL to the reference (k3, token mean)"),
               ("pg_loss", "policy-gradient loss"))


def grpo_figure(runs: list[tuple[str, Path]], out: Path) -> Path:
    """The paper's Figures 4 and 5 side by side: reward, KL and policy-gradient loss per
    optimizer step from each GRPO run's `metrics.jsonl`, one line per (label, run dir)."""
    fig, axes = plt.subplots(1, len(GRPO_CURVES), figsize=(5 * len(GRPO_CURVES), 3.8), squeeze=False)
    for label, run in runs:
        records = read_metrics(run / "metrics.jsonl")
        steps = [r["step"] for r in records]
        for ax, (key, _) in zip(axes[0], GRPO_CURVES):
            ax.plot(steps, [r.get(key, float("nan")) for r in records], label=label, linewidth=1)
    for ax, (_, title) in zip(axes[0], GRPO_CURVES):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
