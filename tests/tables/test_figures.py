"""Figures 1, 2 and 7 (`make figure1|figure2|figure7`): per-group gradient norms, before and
after clipping, from the Table 1 runs' metrics.jsonl, a row of panels per model."""

import json

import matplotlib.image
import pytest
from hydra import initialize_config_dir

from aggc.paths import CONF_DIR
from aggc.tables.figures import norm_lines

from ..synthetic import completed_run, table_plan, train_config
from .test_tables import tables_cli

FIGURES = ("figure1", "figure2", "figure7")
GROUPS = ("q_proj", "v_proj", "up_proj")


@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("figure", FIGURES)
def test_figures_draw_table1_runs(figure, tiny, tmp_path):
    """Every run a figure draws is a Table 1 cell (after `make table1`, a figure trains nothing)."""
    overrides = ["tiny=true"] if tiny else []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        drawn = set(table_plan(figure, tmp_path, *overrides)[2].values())
        table1 = set(table_plan("table1", tmp_path, *overrides)[2].values())
    assert drawn and drawn <= table1


def norms(model: int, strategy: str, step: int) -> tuple[dict, dict]:
    """A run's (pre-clip, post-clip) group norms at a step, distinct for every run, group and step."""
    pre = {g: 10.0 * (model + 1) + step + i / 10 + (5 if strategy == "aggc" else 0) for i, g in enumerate(GROUPS)}
    return pre, {g: v / (2 if strategy == "aggc" else 3) for g, v in pre.items()}


@pytest.mark.parametrize("figure", FIGURES)
def test_each_figure_draws_its_groups_and_norms_per_model(figure, tmp_path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg, spec, dirs, _ = table_plan(figure, tmp_path)
        for cell, run in dirs.items():
            completed_run(run, train_config(cfg, spec, cell), peak_gpu_memory_mb=2048.0)
            model = spec["models"].index(cell.model)
            (run / "metrics.jsonl").write_text("".join(
                json.dumps({"step": s, "norms": norms(model, cell.strategy, s)[0], "post_norms": norms(model, cell.strategy, s)[1]}) + "\n"
                for s in range(4)))
    tables_cli(tmp_path, figure)
    image = matplotlib.image.imread(tmp_path / "out" / f"{figure}.png")
    columns = 2 if figure == "figure7" else 1
    assert image.shape[:2] == (round(3.6 * 3 * 120), round(5.5 * columns * 120))  # a row of panels per model

    fig = spec["figure"]
    runs = {m: {e["label"]: next(d for c, d in dirs.items() if c.model == m and c.seed == 0 and c.strategy == e["strategy"])
                for e in fig["panels"]} for m in spec["models"]}
    panels = norm_lines(runs, fig)
    entries = [e["label"] for e in fig["panels"]]
    assert list(panels) == [(m, c) for m in spec["models"] for c in (entries if figure == "figure7" else [None])]
    expected_groups = {"figure1": ["up_proj"], "figure2": list(GROUPS), "figure7": list(GROUPS)}[figure]
    expected_norms = ["pre"] if figure == "figure2" else ["pre", "post"]
    for (model, column), lines in panels.items():
        shown = [column] if column else entries
        assert [(series, norm) for series, norm, _, _ in lines] == [
            (g if column else f"{e} {g}", n) for e in shown for g in expected_groups for n in expected_norms]
        for series, norm, steps, values in lines:
            entry = column or series.split()[0]
            strategy = next(e["strategy"] for e in fig["panels"] if e["label"] == entry)
            group = series.split()[-1]
            assert steps == [0, 1, 2, 3]
            assert values == [norms(spec["models"].index(model), strategy, s)[norm == "post"][group] for s in steps]
    table = (tmp_path / "out" / f"{figure}.md").read_text()
    assert "2.00 ± 0.00 (n=3)" in table  # the drawn rows' peak GPU memory


def drawn_figure(monkeypatch):
    """The figure a drawing function made (it closes it after saving): kept to inspect."""
    from aggc.tables import figures

    kept = []
    monkeypatch.setattr(figures.plt, "close", kept.append)
    return kept


def identical_runs(tmp_path, labels, steps=5):
    """Runs whose metrics are the same at every step: their curves coincide."""
    runs = []
    for label in labels:
        run = tmp_path / label
        run.mkdir()
        rows = [{"step": s, "reward": 0.5, "kl": 0.01 * s, "pg_loss": 0.0, "norms": {g: 1.0 for g in GROUPS},
                 "post_norms": {g: 1.0 + s for g in GROUPS}} for s in range(steps)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append((label, run))
    return runs


def check_readable(fig, distinct=("linestyle", "marker")):
    """Every panel: both axes labelled, whole-number step ticks, and each curve drawn
    distinguishably (`distinct`: by its dash and marker, where curves of the same colour family
    can coincide; by colour where each is a group of its own)."""
    for ax in fig.axes:
        assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        styles = [tuple(str(getattr(line, f"get_{d}")()) for d in distinct) for line in ax.get_lines()]
        assert len(set(styles)) == len(styles), styles


def test_group_norm_figure_is_readable(tmp_path, monkeypatch):
    from aggc.tables.figures import group_norm_figure

    kept = drawn_figure(monkeypatch)
    group_norm_figure([(label, run) for label, run in identical_runs(tmp_path, ["LoRA", "AGGC"])], tmp_path / "g.png")
    fig = kept[0]
    fig.axes[1].set_ylabel(fig.axes[0].get_ylabel())  # a shared y axis is labelled once, on the left panel
    check_readable(fig, distinct=("color",))


def test_grpo_figure_is_readable_when_curves_coincide(tmp_path, monkeypatch):
    from aggc.tables import figures

    kept = drawn_figure(monkeypatch)
    runs = identical_runs(tmp_path, ["GRPO", "GRPO + AGGC"])
    if hasattr(figures, "grpo_curves"):  # rows over seeds
        figures.grpo_figure(figures.grpo_curves([(label, 0, run) for label, run in runs]), tmp_path / "c.png")
    else:
        figures.grpo_figure(runs, tmp_path / "c.png")
    check_readable(kept[0])
