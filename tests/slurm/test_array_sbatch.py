"""slurm/array.sbatch reads PYTHON as shell words, like its cells lines: an interpreter
whose path has a space (a venv under "my projects/", as `make <table> LAUNCHER=slurm`
passes sys.executable quoted) stays one word, and a launcher with options
(PYTHON="torchrun --nproc-per-node=4") is still split. Run as an array task in plain bash."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from aggc.overrides import cells_line
from aggc.paths import ROOT

TEMPLATE = ROOT / "slurm" / "array.sbatch"


@pytest.mark.parametrize("options", [[], ["--nproc-per-node=2", "--standalone"]], ids=["interpreter", "launcher with options"])
def test_python_with_a_space_in_its_path_is_one_word(tmp_path, options):
    interpreter = tmp_path / "my venv's bin" / "python"
    interpreter.parent.mkdir()
    argv = tmp_path / "argv"
    interpreter.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {shlex.quote(str(argv))}\n')
    interpreter.chmod(0o755)
    cells = tmp_path / "cells.txt"
    cells.write_text(cells_line(["seed=0", "runs_root='a b'"]))
    proc = subprocess.run(["bash", str(TEMPLATE), "aggc.train", str(cells)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "1",
                               "PYTHON": shlex.join([str(interpreter), *options])})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert argv.read_text().splitlines() == [*options, "-m", "aggc.train", "seed=0", "runs_root='a b'"]


@pytest.mark.parametrize("launcher", [["torchrun", "--nproc-per-node=2"], ["python", "-m", "torch.distributed.run"]], ids=["torchrun", "-m"])
def test_torchrun_in_several_tasks_is_refused_and_runs_in_one(tmp_path, launcher):
    """torchrun under srun's N tasks would be N separate torch.distributed jobs (each task
    starts its own group) training one run directory: refused before anything starts; with
    one task (no srun) torchrun runs as given."""
    fake = tmp_path / launcher[0]
    argv = tmp_path / "argv"
    fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {shlex.quote(str(argv))}\n')
    fake.chmod(0o755)
    cells = tmp_path / "cells.txt"
    cells.write_text(cells_line(["seed=0"]))
    for tasks in ("2", "1"):
        proc = subprocess.run(["bash", str(TEMPLATE), "aggc.train", str(cells)], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "1", "SLURM_NTASKS": tasks,
                                   "PYTHON": shlex.join([str(fake), *launcher[1:]])})
        if tasks == "2":
            assert proc.returncode == 2 and "torchruns" in proc.stderr and not argv.exists(), proc.stdout + proc.stderr
        else:
            assert proc.returncode == 0 and argv.read_text().splitlines() == [*launcher[1:], "-m", "aggc.train", "seed=0"], proc.stderr
