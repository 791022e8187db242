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
