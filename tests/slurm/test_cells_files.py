"""A Table 4 sweep cell through slurm/array.sbatch, from the cells files the grid's dry run
writes, under a runs folder whose name Hydra cannot read unquoted (`clip.beta=0.1`, a
space): as an array task in plain bash (SLURM_ARRAY_TASK_ID set) and on the local Slurm.
It trains (and is evaluated) in the directory the grid planned for it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import initialize_config_dir

from aggc.evaluate import eval_settings, is_fresh
from aggc.paths import CONF_DIR, ROOT
from aggc.train import rundir

from ..synthetic import table_plan
from .test_local_slurm import SWEEP_TIMEOUT_S, ended, sbatch

pytestmark = pytest.mark.slow
TEMPLATE = ROOT / "slurm" / "array.sbatch"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


@pytest.fixture(scope="module")
def table4_plan(tmp_path_factory):
    """`make table4 TINY=1 DRY_RUN=1` under `<tmp>/sweep clip.beta=0.1`: (cells files, the
    run directory of each training line, the arith evaluation config)."""
    root = tmp_path_factory.mktemp("t4") / "sweep clip.beta=0.1"
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", "table=table4", "tiny=true", "dry_run=true", f"runs_root='{root}'"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        _, _, dirs, evals = table_plan("table4", root, "tiny=true")
    train = root / "plan" / "table4.train.txt"
    assert "clip.beta=0.1" in train.read_text().splitlines()[0] and "clip.beta=0.95" in train.read_text().splitlines()[1]
    by_line = [dirs[c] for c in sorted(dirs, key=lambda c: c.row)]  # the file is in the table's row order
    return train, root / "plan" / "table4.eval.txt", by_line, evals["arith"]


def test_table4_cell_trains_and_evaluates_as_a_plain_bash_array_task(table4_plan, tmp_path):
    train, evals, runs, eval_cfg = table4_plan
    for module, cells in (("aggc.train", train), ("aggc.evaluate", evals)):
        proc = subprocess.run(["bash", str(TEMPLATE), module, str(cells)], cwd=tmp_path, capture_output=True, text=True,
                              env={**ENV, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "1"})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert rundir.is_completed(runs[0]) and "beta: 0.1" in (runs[0] / "config.yaml").read_text()
    assert is_fresh(runs[0] / "eval" / "arith.json", runs[0], eval_settings(eval_cfg, runs[0]))


@pytest.mark.slurm
def test_table4_cell_trains_through_array_sbatch_on_local_slurm(slurm_cluster, table4_plan, tmp_path):
    train, _, runs, _ = table4_plan
    job = sbatch(slurm_cluster, tmp_path, "--array=1", str(TEMPLATE), "aggc.train", str(train))
    try:
        states = ended(slurm_cluster, job, lambda: slurm_cluster.logs(*tmp_path.glob("*.out")), SWEEP_TIMEOUT_S)
    finally:
        if slurm_cluster.active(job):
            slurm_cluster.run("scancel", job, check=False)
    assert states == {f"{job}_1": "COMPLETED"}, slurm_cluster.logs(*tmp_path.glob("*.out"))
    assert rundir.is_completed(runs[1]) and "beta: 0.95" in (runs[1] / "config.yaml").read_text()
