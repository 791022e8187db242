"""`make table1`'s planner: the full grid, what exists, and cells files, without running anything."""

import os
import re
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir

from aggc import grid
from aggc.identity import find_runs
from aggc.paths import CONF_DIR, ROOT
from aggc.tables import config_value
from aggc.train import rundir

from .synthetic import completed_run, evaluated, table_plan, train_config


def plan(runs_root, *overrides):
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", "table=table1", "dry_run=true", f"runs_root={runs_root}", *overrides],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_dry_run_lists_the_table1_grid_and_runs_nothing(tmp_path):
    """3 models x 4 rows (incl. LoRA without clipping) x 3 training sets x 3 seeds = 108
    training cells; each evaluated on its training set's benchmarks (3+2+1: MetaMathQA's
    runs on GSM8K, MATH and MATH-500) -> 216."""
    out = plan(tmp_path)
    assert "= 108 training cells, 216 evaluations" in out
    assert "to do: 108 of 108 training cells, 216 of 216 evaluations" in out
    cell_lines = [line for line in out.splitlines() if " seed " in line and "train:" in line]
    assert len(cell_lines) == 108
    assert sum("LoRA (no clip)" in line for line in cell_lines) == 27
    assert sum(line.count(" to run") for line in cell_lines) == 108 + 216
    # one training multirun per row and training set, one evaluation multirun per benchmark
    assert out.count("would run: -m aggc.train -m") == 4 * 3 and out.count("would run: -m aggc.evaluate -m") == 6
    assert "eval=mt_bench 'run=<36 runs>'" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]  # nothing trained, nothing evaluated
    train_cells = (tmp_path / "plan" / "table1.train.txt").read_text().splitlines()
    assert len(train_cells) == 108 and len((tmp_path / "plan" / "table1.eval.txt").read_text().splitlines()) == 216
    assert train_cells[0] == (f"model=llama2_7b data=metamathqa strategy=full_ft clip=global train.fsdp=full_shard seed=0 "
                              f"\"runs_root='{tmp_path}'\" train=paper_sft")  # Full FT: 4 GPUs (resources.gpus), FSDP2


def test_finished_cells_are_skipped_and_interrupted_ones_resume(tmp_path):
    """A COMPLETED cell with a fresh result leaves the plan; a killed one shows where it
    resumes; a result of a quick `eval.limit` check, or of a model since retrained, is
    evaluated again."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg, spec, dirs, evals = table_plan("table1", tmp_path)
        cell = next(c for c in dirs if (c.model, c.data, c.strategy, c.seed) == ("mistral_7b", "metamathqa", "aggc", 1))
        completed_run(dirs[cell], train_config(cfg, spec, cell))
        evaluated(dirs[cell], evals["gsm8k"], 50.0)
        quick = compose("evaluate", overrides=["eval=math", "run=.", "eval.limit=5"])
        evaluated(dirs[cell], quick, 50.0)  # a quick check: not the table's evaluation
        other = next(c for c in dirs if (c.model, c.data, c.strategy, c.seed) == ("llama2_7b", "metamathqa", "aggc", 0))
        completed_run(dirs[other], train_config(cfg, spec, other))
        evaluated(dirs[other], evals["gsm8k"], 40.0)
        rundir.mark_completed(dirs[other], {"global_step": 2})  # retrained in place since: its result is stale
    done = dirs[cell]
    partial = next(d for c, d in dirs.items() if (c.model, c.data, c.strategy, c.clip, c.seed) == ("gemma_7b", "wizardlm", "lora", "none", 2))
    (partial / "checkpoints" / "checkpoint-500").mkdir(parents=True)
    (partial / "checkpoints" / "checkpoint-1000").mkdir()

    out = plan(tmp_path)
    assert "to do: 106 of 108 training cells, 215 of 216 evaluations" in out
    line = next(li for li in out.splitlines() if li.split()[:2] == ["mistral_7b", "metamathqa"] and "AGGC" in li and "seed 1" in li)
    assert "train: done" in line and "gsm8k done" in line and "math to run" in line
    line = next(li for li in out.splitlines() if li.split()[:2] == ["llama2_7b", "metamathqa"] and "AGGC" in li and "seed 0" in li)
    assert "train: done" in line and "gsm8k to run" in line
    assert "resumes at step 1000" in next(li for li in out.splitlines() if li.split()[:2] == ["gemma_7b", "wizardlm"]
                                        and "no clip" in li and "seed 2" in li)
    train_cells = (tmp_path / "plan" / "table1.train.txt").read_text()
    assert "model=mistral_7b data=metamathqa strategy=aggc clip=aggc seed=1 " not in train_cells
    assert "model=gemma_7b data=wizardlm strategy=lora clip=none seed=2 " in train_cells
    evals_file = (tmp_path / "plan" / "table1.eval.txt").read_text()
    assert f"\"run='{done}'\" eval=gsm8k" not in evals_file and f"\"run='{done}'\" eval=math" in evals_file
    assert f"\"run='{dirs[other]}'\" eval=gsm8k" in evals_file


def test_slurm_launchers_and_a_bad_launcher(tmp_path):
    """LAUNCHER names a launcher config; `slurm_local` is `slurm` sized for the local test cluster."""
    assert plan(tmp_path, "launcher=slurm").count("would submit ") == 5  # aggc.submit's chain (tests/test_submit.py)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        hydra = compose("config", overrides=["hydra/launcher=slurm_local"], return_hydra_config=True).hydra
    assert hydra.launcher.partition == "local" and hydra.launcher.gpus_per_node == 0
    assert hydra.launcher.max_num_timeout == 3 and hydra.launcher.array_parallelism == 16  # from slurm.yaml
    assert hydra.launcher._target_.endswith("SlurmLauncher")
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", "table=table1", "dry_run=true", "launcher=pbs",
                           f"runs_root={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "launcher='pbs'" in proc.stderr and "slurm_local" in proc.stderr


def test_ablation_targets_print_their_cluster_plans(tmp_path):
    """make table3 / table4 / figure6 / table8 DRY_RUN=1: the paper's grids, each swept key
    in the training command and in the run directory's name (table8: no sweep)."""
    expected = {
        "table3": ("2 models x 2 rows x 1 training sets x 3 seeds = 12 training cells, 24 evaluations", "clip.schedule.kind=none"),
        "table4": ("1 models x 5 rows x 1 training sets x 3 seeds = 15 training cells, 15 evaluations", "clip.beta=0.7"),
        "figure6": ("2 models x 17 rows x 1 training sets x 3 seeds = 102 training cells, 204 evaluations", "model.lora_r=128"),
        "table8": ("3 models x 2 rows x 1 training sets x 3 seeds = 18 training cells, 0 evaluations", "clip=aggc_grpo"),
    }
    for table, (counts, swept) in expected.items():
        proc = subprocess.run([sys.executable, "-m", "aggc.grid", f"table={table}", "dry_run=true", f"runs_root={tmp_path}"],
                              cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert counts in proc.stdout
        cells = (tmp_path / "plan" / f"{table}.train.txt").read_text()
        assert f" {swept} " in cells and "hydra.run.dir" not in cells  # each run finds its own directory


def test_a_table_without_a_tiny_section_says_so(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", "table=demo", "dry_run=true", "tiny=true", f"runs_root={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "table=table1: no `tiny` section" in proc.stderr  # demo.yaml is named table1


@pytest.mark.slow
def test_tiny_rank_sweep_trains_each_rank_and_draws_the_figure(tmp_path):
    """make figure6 TINY=1: each row's swept `model.lora_r` reaches the adapter (r = alpha),
    every cell is evaluated, and the table and line plot are written."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", "table=figure6", "tiny=true", f"runs_root={tmp_path}",
                           f"out_dir={out}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for strategy, clip in (("lora", "global"), ("aggc", "aggc")):
        runs = find_runs(tmp_path, "tiny_llama", "arith", strategy, clip, 0)
        by_rank = {yaml.safe_load((run / "config.yaml").read_text())["strategy"]["peft"]["r"]: run for run in runs}
        assert sorted(by_rank) == [1, 16]
        for rank, run in by_rank.items():
            assert yaml.safe_load((run / "config.yaml").read_text())["strategy"]["peft"]["alpha"] == rank
            assert (run / "COMPLETED").exists() and (run / "eval" / "arith.json").exists()
    table = (out / "figure6.md").read_text().split("**Paired comparisons**")[0]  # the rows; their comparisons follow
    assert [line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| ")][1:] == [
        "LoRA r=1", "LoRA r=16", "AGGC r=1", "AGGC r=16"]
    assert "—" not in "".join(line.split("|")[3] for line in table.splitlines() if line.startswith("| tiny") or line.startswith("|  |"))
    assert (out / "figure6.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("table, swept", [("table3", ("clip.schedule.kind", ["none", "linear"])),
                                          ("table4", ("clip.beta", [0.1, 0.95]))])
def test_tiny_ablations_train_each_setting_and_render(tmp_path, table, swept):
    """make table3 / table4 TINY=1: each row's setting reaches the run's clip config, every
    cell is evaluated, and the table has a number in every row."""
    key, values = swept
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", f"table={table}", "tiny=true", f"runs_root={tmp_path}",
                           f"out_dir={out}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {config_value(yaml.safe_load((run / "config.yaml").read_text()), key): run
            for run in find_runs(tmp_path, "tiny_llama", "arith", "aggc", "aggc", 0)}
    assert sorted(runs, key=str) == sorted(values, key=str)
    for run in runs.values():
        assert (run / "eval" / "arith.json").exists()
    rows = [line for line in (out / f"{table}.md").read_text().split("**Paired comparisons**")[0].splitlines()
            if line.startswith("| tiny") or line.startswith("|  |")]
    assert len(rows) == 2 and all(line.split("|")[3].strip() != "—" for line in rows)


@pytest.mark.parametrize("plan_of", [grid.cells, grid.tiny_version], ids=["full", "tiny"])
@pytest.mark.parametrize("entry, says", [
    ({"row": "AGGC", "reference": "LoRa"}, "compare reference='LoRa' names no row"),
    ({"row": "AGGC", "reference": "AGGC"}, "with itself"),
    ({"row": "AGGC"}, "exactly `row` and `reference`"),
])
def test_a_comparison_naming_no_row_is_refused_when_the_grid_is_planned(plan_of, entry, says):
    """A misspelt `compare` is refused before any training (it failed only when the table was
    rendered after it, and the tiny version dropped it silently with the rows it leaves out)."""
    spec = yaml.safe_load((CONF_DIR / "table" / "table1.yaml").read_text())
    spec["compare"] = [*spec["compare"], entry]
    with pytest.raises(grid.ConfigError, match=re.escape(says)):
        plan_of(spec)


@pytest.mark.parametrize("where", ["title", "row", "column"])
def test_a_label_without_a_latex_spelling_is_refused_when_the_grid_is_planned(where):
    """A label the .tex cannot spell (here "naïve") is refused before any training: the
    tabulate stage failed on it after the training, before writing the CSVs and the figure."""
    spec = yaml.safe_load((CONF_DIR / "table" / "table1.yaml").read_text())
    if where == "title":
        spec["title"] += " (naïve)"
    elif where == "row":
        spec["rows"][0]["label"] += " (naïve)"
    else:
        spec["columns"][0]["label"] += " (naïve)"
    with pytest.raises(grid.ConfigError, match="no LaTeX spelling"):
        grid.cells(spec)
