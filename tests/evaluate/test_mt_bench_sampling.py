"""MT-Bench answers are sampled as FastChat samples them: each category at its temperature
(`eval.sampling=fastchat`, the default), or all greedily (`greedy`)."""

import json

import pytest
from hydra import compose, initialize_config_dir

from aggc.config import ConfigError
from aggc.evaluate.mt_bench import check_inputs, temperature
from aggc.paths import CONF_DIR, ROOT

# fastchat/llm_judge/common.py `temperature_config` (lm-sys/FastChat), written out here
FASTCHAT = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
            "stem": 0.1, "humanities": 0.1}
CATEGORIES = {json.loads(line)["category"] for line in (ROOT / "data" / "mt_bench" / "question.jsonl").read_text().splitlines()}


def config(*overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["run=.", "eval=mt_bench", *overrides])


def test_each_category_is_sampled_at_fastchats_temperature():
    cfg = config()
    assert cfg.eval.sampling == "fastchat" and CATEGORIES == set(FASTCHAT)
    assert {c: temperature(cfg, c) for c in CATEGORIES} == FASTCHAT
    assert temperature(cfg, "a category FastChat does not list") == 0.7  # gen_model_answer.py's fallback


def test_greedy_decodes_every_category_greedily():
    cfg = config("eval.sampling=greedy")
    assert {temperature(cfg, c) for c in [*CATEGORIES, "other"]} == {0.0}


def test_unknown_sampling_is_refused_before_loading():
    with pytest.raises(ConfigError, match="eval.sampling='beam'"):
        check_inputs(config("eval.sampling=beam"))
