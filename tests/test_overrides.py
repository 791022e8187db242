"""Overrides written for a later command line parse back to exactly what was meant: a
quoted value composes to the same string, and a cells-file line splits (as
slurm/array.sbatch splits it, with xargs) into the same overrides."""

import subprocess

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from aggc.overrides import cells_line, quoted
from aggc.paths import CONF_DIR

# paths as people and sweeps name them: `=` (Hydra's old sweep folders), spaces, commas,
# brackets, quotes, backslashes, `${` (an OmegaConf interpolation), non-ASCII
TEXT = st.text(st.sampled_from(list("ab/=., _-[]{}()'\"\\$:~@*?β")), min_size=1, max_size=30)


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield


@pytest.mark.parametrize("path", ["runs/mistral_7b/metamathqa/aggc-aggc__clip.beta=0.1/seed0", "/scratch/my runs/a,b", "it's", "x${y}"])
def test_a_quoted_path_composes_to_itself(hydra_conf, path):
    assert compose("evaluate", overrides=[f"run={quoted(path)}", "eval=arith"]).run == path
    assert compose("replay", overrides=[f"norms={quoted(path)}", f"out={quoted(path)}"]).norms == path


@settings(max_examples=40, deadline=None)
@given(TEXT)
def test_any_quoted_string_composes_to_itself(hydra_conf, text):
    assert compose("replay", overrides=[f"norms={quoted(text)}", "out=x"]).norms == text


@settings(max_examples=20, deadline=None)
@given(st.lists(st.one_of(TEXT.map(lambda t: f"runs_root={quoted(t)}"), st.just("seed=0"), st.just("clip.beta=0.1")), min_size=1, max_size=4))
def test_a_cells_line_splits_back_into_its_overrides(overrides):
    """slurm/array.sbatch's split: `xargs printf '%s\\0'` on the line."""
    out = subprocess.run(["xargs", "printf", "%s\\0"], input=cells_line(overrides).rstrip("\n"), capture_output=True, text=True, check=True)
    assert out.stdout.split("\0")[:-1] == overrides
