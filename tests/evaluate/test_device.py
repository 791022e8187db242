"""Evaluation runs where the node's GPU is (`device=auto`), or where it is told; a GPU asked
for on a machine without one is refused, never a silent CPU run."""

import pytest
from hydra import compose, initialize_config_dir

from aggc.config import ConfigError
from aggc.evaluate import check_inputs, choose_device
from aggc.paths import CONF_DIR


@pytest.mark.parametrize("requested, cuda, chosen", [
    ("auto", True, "cuda"), ("auto", False, "cpu"), ("cpu", True, "cpu"), ("cpu", False, "cpu"),
    ("cuda", True, "cuda"), ("cuda:1", True, "cuda:1")])
def test_the_device_is_the_gpu_where_there_is_one_unless_told(requested, cuda, chosen):
    assert choose_device(requested, cuda) == chosen


@pytest.mark.parametrize("requested, message", [
    ("cuda", "device=cuda: no GPU is visible here"), ("cuda:0", "device=cuda:0: no GPU is visible here"),
    ("gpu", "must be auto, cpu, cuda or cuda:<index>"), ("cuda:x", "must be auto, cpu, cuda")])
def test_a_gpu_asked_for_without_one_or_a_bad_name_is_refused(requested, message):
    with pytest.raises(ConfigError, match=message):
        choose_device(requested, cuda_available=False)


def test_the_evaluation_command_refuses_before_loading_anything(tmp_path):
    """On this CPU-only machine, `device=cuda` fails in the input checks, before a model loads."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: device=cuda is valid here")
    cfg = evaluation_of_a_run(tmp_path, "device=cuda")
    with pytest.raises(ConfigError, match="device=cuda: no GPU is visible here"):
        check_inputs(cfg)


def evaluation_of_a_run(tmp_path, *overrides):
    """The evaluation config of a run directory with a final model (an empty one: nothing loads)."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=[f"run={run}", "eval=arith", *overrides])


def _settings(tmp_path, *overrides):
    from aggc.evaluate import eval_settings
    from aggc.identity import digest

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True, exist_ok=True)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"run={run}", "eval=arith", *overrides])
    return digest(eval_settings(cfg, run))


def test_the_dtype_is_part_of_the_evaluation_identity_and_the_device_is_not(tmp_path):
    """A float32 and a bfloat16 evaluation of one run are two evaluations (greedy generations
    differ), never one result standing for the other; where it ran (cpu, cuda) is recorded
    but does not change the eval_id, so a table planned on a login node without a GPU finds a
    GPU node's result fresh."""
    float32 = _settings(tmp_path)
    assert _settings(tmp_path, "dtype=float32") == float32
    assert _settings(tmp_path, "dtype=bfloat16") != float32
    assert _settings(tmp_path, "device=cpu") == _settings(tmp_path, "device=cuda") == float32


def test_the_dtype_changes_what_the_model_computes():
    """Why the dtype is part of the identity: the same weights give other logits in bfloat16."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4))
    ids = torch.arange(16).unsqueeze(0)
    with torch.no_grad():
        full = model(ids).logits
        half = model.to(torch.bfloat16)(ids).logits.float()
    assert not torch.equal(full, half)


def test_an_unknown_dtype_is_refused_before_loading_anything(tmp_path):
    cfg = evaluation_of_a_run(tmp_path, "dtype=float16")
    with pytest.raises(ConfigError, match="dtype='float16': must be one of float32, bfloat16"):
        check_inputs(cfg)
