"""`make demo` (aggc.grid: train multiruns -> evaluate multirun -> tables), shrunk:
one seed, a few steps, a few problems. The full demo is `make demo` (about 6 minutes)."""

import json
import subprocess

import pytest
import yaml

from aggc.paths import CONF_DIR, ROOT

pytestmark = pytest.mark.slow


def test_demo_pipeline_writes_the_mini_table(tmp_path):
    proc = subprocess.run(
        ["make", "-s", "demo", f"DEMO_RUNS={tmp_path / 'runs'}", f"DEMO_OUT={tmp_path / 'out'}", "DEMO_SEEDS=0",
         "DEMO_TRAIN_ARGS=experiment=smoke train.max_steps=2 train.save_steps=2", "DEMO_EVAL_ARGS=eval.limit=3 max_gen_toks=8"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "out" / "table1.md").read_text().split("**Paired comparisons**")[0]  # the rows
    labels = [row["label"] for row in yaml.safe_load((CONF_DIR / "table" / "demo.yaml").read_text())["rows"]]
    for label in labels:
        row = next(line for line in table.splitlines() if line.startswith("|") and line.split("|")[2].strip() == label)
        assert "(n=1)" in row, row  # every row (strategies and the positive control) trained and evaluated
    assert (tmp_path / "out" / "group_norms.png").exists() and (tmp_path / "out" / "table1.paired.csv").exists()
    timing = json.loads((tmp_path / "out" / "table1.timing.json").read_text())
    assert set(timing["seconds"]) == {"train", "evaluate", "tables"} and timing["cells"] == len(labels)


@pytest.mark.parametrize("target, runs, out", [("demo", "DEMO_RUNS", "DEMO_OUT"), ("demo-real", "DEMO_REAL_RUNS", "DEMO_REAL_OUT"),
                                               ("demo-real-grpo", "DEMO_REAL_RUNS", "DEMO_REAL_OUT")])
def test_a_demo_dry_run_trains_nothing(tmp_path, target, runs, out):
    """`make <demo> DRY_RUN=1` prints the plan and its cost, as the paper targets do; before,
    the demo targets ignored DRY_RUN and trained (demo-real: hours), and demo-real-grpo
    trained its SFT start point before planning."""
    proc = subprocess.run(["make", "-s", target, "DRY_RUN=1", f"{runs}={tmp_path / 'runs'}", f"{out}={tmp_path / 'out'}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "would run: -m aggc.train" in proc.stdout and "cost and fit" in proc.stdout
    trained = [p for p in (tmp_path / "runs").rglob("*") if p.name in ("config.yaml", "metrics.jsonl", "COMPLETED")]
    assert not trained and not (tmp_path / "out").exists()
