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
