"""`max_gen_toks` that cannot fit the model's context is clamped before the model loads, and
the clamped value is what the result records and a table expects (`eval_settings`)."""

import json

import pytest
from hydra import compose, initialize_config_dir

from aggc.evaluate import eval_settings, generation_tokens
from aggc.paths import CONF_DIR


def evaluation_config(run, *overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=[f"run={run}", *overrides])


@pytest.fixture
def run(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text(json.dumps({"max_position_embeddings": 256}))
    return tmp_path


@pytest.mark.parametrize("eval_name", ["arith", "gsm8k", "mt_bench"])
@pytest.mark.parametrize("asked, expected", [(1024, 128), (129, 128), (128, 128), (64, 64)])
def test_generation_is_clamped_to_half_the_context(run, eval_name, asked, expected):
    cfg = evaluation_config(run, f"eval={eval_name}", f"max_gen_toks={asked}")
    assert generation_tokens(cfg, run) == expected
    assert eval_settings(cfg, run)["max_gen_toks"] == expected


def test_classifier_evaluation_generates_nothing_and_keeps_its_settings(run):
    cfg = evaluation_config(run, "eval=glue_rte", "max_gen_toks=1024")
    assert generation_tokens(cfg, run) == 1024


def test_a_model_without_a_context_length_is_left_as_asked(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    assert generation_tokens(evaluation_config(tmp_path, "eval=arith", "max_gen_toks=1024"), tmp_path) == 1024
