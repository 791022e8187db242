"""`make table2`'s grid: the cluster plan (MNLI before the tasks that start from it), and the
tiny version end to end on CPU (train wave by wave, evaluate, render Table 2)."""

import json
import os
import subprocess
import sys

import pytest

from aggc.identity import find_runs
from aggc.paths import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "glue"
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def grid(runs_root, *overrides):
    return subprocess.run([sys.executable, "-m", "aggc.grid", "table=table2", f"runs_root={runs_root}", *overrides],
                          cwd=ROOT, capture_output=True, text=True, env=OFFLINE)


def test_dry_run_plans_mnli_before_the_tasks_that_start_from_it(tmp_path):
    proc = grid(tmp_path, "dry_run=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # 5 trained rows (HAdapter, PAdapter: the paper's numbers only) x 8 tasks x 3 seeds
    assert "table2: 1 models x 5 rows (+2 paper only) x 8 training sets x 3 seeds = 120 training cells, 120 evaluations" in out
    assert "HAdapter" not in out and "PAdapter" not in out
    assert "training wave 1: glue_mnli, glue_sst2, glue_cola, glue_qnli, glue_qqp" in out
    assert "training wave 2: glue_mrpc (from glue_mnli), glue_rte (from glue_mnli), glue_stsb (from glue_mnli)" in out
    cell_lines = [li for li in out.splitlines() if " seed " in li and "train:" in li]
    assert len(cell_lines) == 120 and sum("(after glue_mnli)" in li for li in cell_lines) == 45
    # every MNLI cell is planned before every cell that starts from MNLI
    mnli = [i for i, li in enumerate(cell_lines) if " glue_mnli " in li]
    after = [i for i, li in enumerate(cell_lines) if "(after glue_mnli)" in li]
    assert max(mnli) < min(after)

    train = [li for li in out.splitlines() if li.startswith("would run: -m aggc.train")]
    # one multirun per row and task: 5 x 5 in the first wave, 5 x 3 in the second
    assert len(train) == 40 and all("train=paper_glue" in li for li in train)
    first = train[:25]
    tasks = [li.split(" data=")[1].split()[0] for li in train]
    assert tasks[:5] == ["glue_cola", "glue_mnli", "glue_qnli", "glue_qqp", "glue_sst2"] and set(tasks[:25]) == set(tasks[:5])
    assert tasks[25:28] == ["glue_mrpc", "glue_rte", "glue_stsb"] and set(tasks[25:]) == set(tasks[25:28])
    assert [li.split(" strategy=")[1].split()[0] for li in first[::5]] == ["full_ft", "bitfit", "lora", "dora", "aggc"]
    assert out.count("would run: -m aggc.evaluate") == 8 and "eval=glue_mnli 'run=<15 runs>'" in out

    plan = tmp_path / "plan"
    cells = (plan / "table2.train.txt").read_text().splitlines()
    assert len(cells) == 120 and all("data=glue_mnli" not in c for c in cells[75:])
    wave2 = (plan / "table2.train.wave2.txt").read_text().splitlines()
    assert len(wave2) == 45 and cells[75:] == wave2
    assert {c.split("data=")[1].split()[0] for c in wave2} == {"glue_mrpc", "glue_rte", "glue_stsb"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]  # nothing trained


def test_a_task_whose_predecessor_the_table_does_not_train_is_refused(tmp_path):
    proc = grid(tmp_path, "dry_run=true", "~table.grid.datasets.glue_mnli")
    assert proc.returncode != 0
    assert "data=glue_mrpc starts from data.init_from=glue_mnli, which the table does not train" in proc.stderr


@pytest.mark.slow
def test_tiny_table2_end_to_end(tmp_path):
    """`make table2 TINY=1` with the unshipped tasks added as its config says (TABLE_ARGS),
    shrunk to the AGGC row: SST-2 and CoLA (one multirun over two data configs) then RTE
    (which starts from the SST-2 run, the offline stand-in for MNLI), on the 40-row fixtures,
    two epochs of 5 steps each, the better dev epoch kept (train.select_best=epoch, as on the
    cluster)."""
    tasks = {"glue_sst2_local": "glue_sst2", "glue_cola_local": "glue_cola", "glue_rte_local": "glue_rte"}
    columns = ",".join(f"{{benchmark:{b},label:{b},paper:{b[5:]}}}" for b in tasks.values())
    proc = grid(tmp_path / "runs", "tiny=true", f"out_dir={tmp_path / 'out'}", "table.tiny.rows=[AGGC]",
                "~table.tiny.datasets.glue_qnli_local", *(f"+table.tiny.datasets.{d}=[{b}]" for d, b in tasks.items()),
                f"table.tiny.columns=[{columns}]",
                f"train_args='data.root={FIXTURES} data.train_file=train_sample.tsv data.eval_files.validation=dev_sample.tsv "
                "data.max_length=64 train.per_device_train_batch_size=8'")  # the table's own: 2 epochs, select_best
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sst2,), (rte,) = (find_runs(tmp_path / "runs", "tiny_deberta", data, "aggc", "aggc", 0)
                       for data in ("glue_sst2_local", "glue_rte_local"))
    assert json.loads((rte / "manifest.json").read_text())["init_from"] == str(sst2)
    for run, bench in ((sst2, "glue_sst2"), (rte, "glue_rte")):
        selection = json.loads((run / "manifest.json").read_text())["selection"]
        assert [e["epoch"] for e in selection["epochs"]] == [1, 2] and selection["best_epoch"] in (1, 2)
        scored = json.loads((run / "eval" / f"{bench}.json").read_text())
        assert scored["scored_model"] == f"best epoch on dev accuracy: {selection['best_epoch']} of 2"
        assert scored["score"] == pytest.approx(selection["best"], rel=1e-6)
    table = (tmp_path / "out" / "table2.md").read_text()
    row = next(li for li in table.splitlines() if li.startswith("| tiny_deberta"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "AGGC"
    sst2_score = json.loads((sst2 / "eval" / "glue_sst2.json").read_text())["score"]
    assert cells[2] == f"{sst2_score:.2f} (n=1)" and cells[8].endswith("(n=1)")  # SST-2, RTE
    assert cells[5].endswith("(n=1)") and len(cells) == 11  # CoLA; three columns of ours, paper, difference
    timing = json.loads((tmp_path / "out" / "table2.timing.json").read_text())
    assert set(timing["seconds"]) == {"train", "evaluate", "tables"}
