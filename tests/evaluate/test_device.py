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
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"run={run}", "eval=arith", "device=cuda"])
    with pytest.raises(ConfigError, match="device=cuda: no GPU is visible here"):
        check_inputs(cfg)
