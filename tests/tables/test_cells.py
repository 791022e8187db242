"""A table cell is exactly the runs of its configuration, one per seed: with every paper
table's runs in one tree (laid out from the grid's own cells, synthetic eval files), each
table's n equals its seed count, a cell shared by two tables is one set of runs, and a
result of another model or another evaluation config is not counted."""

import json
import shutil

import pytest
from hydra import compose, initialize_config_dir

from aggc import grid
from aggc.paths import CONF_DIR
from aggc.tables import build, select
from aggc.train import rundir

from ..synthetic import completed_run, evaluated, table_plan, train_config

PAPER_TABLES = ("table1", "table2", "table3", "table4", "table5", "table8", "figure6")


@pytest.fixture(scope="module")
def every_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        plans = {table: table_plan(table, root) for table in PAPER_TABLES}
        for cfg, spec, dirs, evals in plans.values():
            for cell, run in dirs.items():
                completed_run(run, train_config(cfg, spec, cell), peak_gpu_memory_mb=1024.0 * (1 + cell.seed))
                for bench in cell.benchmarks:
                    evaluated(run, evals[bench], 50.0 + cell.seed)
    return root, plans


def test_identical_configurations_in_two_tables_are_one_run(every_table):
    """Table 3's time-varying row, Table 4's beta = 0.95 and Figure 6's r = 128 are Table 1's
    AGGC cells: trained once, not once per table."""
    _, plans = every_table
    table1 = set(plans["table1"][2].values())
    for table, label in (("table3", "time-varying"), ("table4", "β = 0.95"), ("figure6", "AGGC r=128")):
        _, spec, dirs, _ = plans[table]
        row = next(i for i, r in enumerate(spec["rows"]) if r["label"].startswith(label))
        shared = {run for cell, run in dirs.items() if cell.row == row}
        assert shared and shared <= table1, f"{table} {label} must be Table 1's runs"


@pytest.mark.parametrize("table", PAPER_TABLES)
def test_each_cell_counts_one_run_per_seed(every_table, table):
    """...with a copy of some runs lying in a backup folder under the same runs root."""
    root, plans = every_table
    backup = root / "backup"
    if not backup.exists():
        shutil.copytree(root / "mistral_7b", backup / "mistral_7b")
    cfg, spec, dirs, _ = plans[table]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        rows = build(spec, select(spec, root, *grid.table_cells(cfg, spec)), [])
    for row, spec_row in zip(rows, [r for _ in spec["models"] for r in spec["rows"]]):
        if row["paper_only"]:
            continue
        seeds = len(spec_row.get("seeds", spec["grid"]["seeds"]))
        for bench, (ours, _) in row["cells"].items():
            assert ours is not None and ours.n == seeds, f"{table} {row['model']} {row['label']} {bench}: {ours}"


def test_a_stale_or_partial_result_is_not_counted(tmp_path):
    """A result of a model since retrained, or of a quick `eval.limit=5` check, is left out."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg, spec, dirs, evals = table_plan("table4", tmp_path)
        runs = {}
        for cell, run in dirs.items():
            if dict(cell.match)["clip.beta"] == "0.95":
                completed_run(run, train_config(cfg, spec, cell))
                evaluated(run, evals["math"], 40.0)
                runs[cell.seed] = run
        rundir.mark_completed(runs[1], {"global_step": 2})  # retrained: its result scored the old model
        evaluated(runs[2], compose("evaluate", overrides=["eval=math", "run=.", "eval.limit=5"]), 40.0)
        cell = next(r for r in build(spec, select(spec, tmp_path, *grid.table_cells(cfg, spec)), [])
                    if r["label"] == "β = 0.95")["cells"]["math"][0]
    assert cell.n == 1
    assert json.loads((runs[2] / "eval" / "math.json").read_text())["eval_id"]


def test_cells_of_several_commits_or_uncommitted_code_are_marked(tmp_path):
    """Tabulation marks a cell whose runs mix commits, or include a dirty tree's run."""
    from aggc.tables import markdown

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg, spec, dirs, evals = table_plan("table4", tmp_path)
        for cell, run in dirs.items():
            beta = dict(cell.match)["clip.beta"]
            manifest = {"0.95": {"commit": f"c{cell.seed}"}, "0.9": {"dirty": cell.seed == 0}}.get(beta, {})
            completed_run(run, train_config(cfg, spec, cell), **manifest)
            evaluated(run, evals["math"], 40.0)
        md = markdown(spec, build(spec, select(spec, tmp_path, *grid.table_cells(cfg, spec)), []))
    marked = {line.split("|")[2].strip(): "‡" in line for line in md.splitlines() if "β =" in line}
    assert marked == {"β = 0.1": False, "β = 0.5": False, "β = 0.7": False, "β = 0.9": True, "β = 0.95": True}
    assert "‡: its runs were trained by more than one commit, or by uncommitted code" in md
