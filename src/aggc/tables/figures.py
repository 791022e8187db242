"""Per-group gradient-norm curves (the paper's Figures 1, 2 and 7: LoRA vs AGGC) from the
runs' `metrics.jsonl`: the norm each group's update was made with (post-clip)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..train.rundir import read_metrics  # noqa: E402

# Line styles and markers taken in turn, so curves that coincide (two strategies with the same
# reward, groups clipped to one norm) stay visible: the later one draws over with another dash.
STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 2)), "x"), ((0, (3, 2, 1, 2, 1, 2)), "P"))


def curve_style(i: int, points: int) -> dict:
    """The `i`-th curve's dash and marker, a marker on about ten of its `points`."""
    dash, marker = STYLES[i % len(STYLES)]
    return {"linestyle": dash, "marker": marker, "markersize": 3.5, "markevery": max(1, points // 10)}


def step_axis(ax) -> None:
    """An x axis of optimizer steps: labelled, with whole-number ticks only (matplotlib's
    automatic ticks otherwise, so a long run's axis is drawn as before)."""
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True))


def group_norm_figure(panels: list[tuple[str, Path]], out: Path) -> Path:
    """One panel per (title, run dir), one line per group, shared y axis."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (title, run) in zip(axes[0], panels):
        records = read_metrics(run / "metrics.jsonl")
        steps = [r["step"] for r in records]
        for group in records[0]["post_norms"]:
            ax.plot(steps, [r["post_norms"].get(group) for r in records], label=group, linewidth=1)
        ax.set_title(title)
        step_axis(ax)
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
CURVE_COLUMNS = ("strategy", "seed", "step", "reward", "kl", "pg_loss", "frac_reward_zero_std", "entropy", "grad_norm",
                 "clip_factor_min", "clip_factor_max")


def grpo_curves(runs: list[tuple[str, int, Path]]) -> list[dict]:
    """One row per (label, seed, optimizer step) of each GRPO run's `metrics.jsonl`: reward,
    KL, policy-gradient loss, the fraction of zero-variance prompt groups, the policy's
    entropy, the pre-clip gradient norm and the lowest and highest clip factor over the
    groups (None when a step did not log it): what a reader needs to check what the run did."""
    def row(label, seed, r):
        factors = list((r.get("factors") or {}).values())
        logged = {**r, **({"clip_factor_min": min(factors), "clip_factor_max": max(factors)} if factors else {})}
        return {"strategy": label, "seed": seed, **{k: logged.get(k) for k in CURVE_COLUMNS[2:]}}

    return [row(label, seed, r) for label, seed, run in runs for r in read_metrics(run / "metrics.jsonl")]


def grpo_figure(curves: list[dict], out: Path) -> Path:
    """The paper's Figures 4 and 5 side by side: reward, KL and policy-gradient loss per
    optimizer step, one line per label: the mean over its seeds, shaded from the lowest to
    the highest seed (`grpo_curves`' rows)."""
    fig, axes = plt.subplots(1, len(GRPO_CURVES), figsize=(5 * len(GRPO_CURVES), 3.8), squeeze=False)
    labels = list(dict.fromkeys(c["strategy"] for c in curves))
    for i, label in enumerate(labels):
        mine = [c for c in curves if c["strategy"] == label]
        seeds = sorted({c["seed"] for c in mine})
        steps = sorted({c["step"] for c in mine})
        for ax, (key, _) in zip(axes[0], GRPO_CURVES):
            per_step = [[c[key] for c in mine if c["step"] == s and c[key] is not None] for s in steps]
            mean = [sum(v) / len(v) if v else float("nan") for v in per_step]
            name = f"{label} (mean of {len(seeds)} seeds)" if len(seeds) > 1 else label
            ax.plot(steps, mean, color=f"C{i}", label=name, linewidth=1.2, **curve_style(i, len(steps)))
            if len(seeds) > 1:
                ax.fill_between(steps, [min(v) if v else float("nan") for v in per_step],
                                [max(v) if v else float("nan") for v in per_step], color=f"C{i}", alpha=0.2, linewidth=0)
    for ax, (_, title) in zip(axes[0], GRPO_CURVES):
        ax.set_title(title)
        ax.set_ylabel(title)
        step_axis(ax)
    banded = any(len({c["seed"] for c in curves if c["strategy"] == label}) > 1 for label in labels)
    axes[0][0].legend(fontsize=8, title="shaded: lowest to highest seed" if banded else None, title_fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out



# metrics.jsonl key, legend words and line style of each norm a `kind: norms` figure can draw
NORMS = {"pre": ("norms", "before clipping", ":"), "post": ("post_norms", "after clipping", "-")}


def norm_lines(runs: dict[str, dict[str, Path]], figure: dict) -> dict[tuple[str, str | None], list[tuple[str, str, list, list]]]:
    """The lines of a `kind: norms` figure (the paper's Figures 1, 2 and 7), by panel: a row of
    panels per model (`runs`: model -> {entry label: run dir}); the figure's entries side by
    side (`side_by_side`: panel (model, entry)) or overlaid (panel (model, None)); a line
    (series, norm, steps, values) per entry x group (`groups`, null: every group) x norm
    (`norms`: `pre` and/or `post` clipping), from each run's metrics.jsonl."""
    entries = [p["label"] for p in figure["panels"]]
    panels = {}
    for model, by_entry in runs.items():
        for column in (entries if figure.get("side_by_side") else [None]):
            lines = []
            for entry in [column] if column else entries:
                if entry not in by_entry:
                    continue
                records = read_metrics(by_entry[entry] / "metrics.jsonl")
                steps = [r["step"] for r in records]
                for group in figure.get("groups") or list(records[0]["norms"]):
                    series = group if column else f"{entry} {group}"
                    for norm in figure.get("norms", ["post"]):
                        values = [r[NORMS[norm][0]].get(group) for r in records]
                        lines.append((series, norm, steps, [float("nan") if v is None else v for v in values]))
            panels[model, column] = lines
    return panels


def norm_figure(runs: dict[str, dict[str, Path]], figure: dict, out: Path) -> Path:
    """`norm_lines` drawn: log-scale norm over optimizer steps, a colour per series, dotted
    before clipping, solid after."""
    panels = norm_lines(runs, figure)
    models, columns = list(runs), list(dict.fromkeys(column for _, column in panels))
    fig, axes = plt.subplots(len(models), len(columns), figsize=(5.5 * len(columns), 3.6 * len(models)),
                             sharey="row", squeeze=False)
    for (model, column), lines in panels.items():
        ax = axes[models.index(model)][columns.index(column)]
        colours = {}
        for series, norm, steps, values in lines:
            _, words, style = NORMS[norm]
            colour = colours.setdefault(series, f"C{len(colours) % 10}")
            ax.plot(steps, values, color=colour, linestyle=style, linewidth=1, label=f"{series} ({words})")
        ax.set_title(model if column is None else f"{model}: {column}")
        step_axis(ax)
        ax.set_yscale("log")
        ax.legend(fontsize=6, ncol=2)
    for row in axes:
        row[0].set_ylabel("group gradient norm")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
