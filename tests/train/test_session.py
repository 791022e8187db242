"""A run's manifest records the batch its launch trains, and the Trainer gets those numbers."""

import json

import pytest
from hydra import compose, initialize_config_dir

from aggc.config import validate
from aggc.paths import CONF_DIR
from aggc.train.session import open_run, trainer_arguments


@pytest.mark.parametrize("data, processes", [("metamathqa", 1), ("metamathqa", 4), ("codefeedback", 2), ("wizardlm", 8)])
def test_manifest_and_trainer_get_the_accumulation_computed_from_the_global_batch(tmp_path, monkeypatch, data, processes):
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    monkeypatch.setenv("RANK", "0")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=mistral_7b", f"data={data}", "strategy=aggc", "train=paper_sft",
                                           "wandb.mode=disabled", f"runs_root={tmp_path}"])
    session = open_run(cfg, tmp_path / "run", validate(cfg))
    session.close()
    per_device = cfg.train.per_device_train_batch_size
    accumulation = cfg.train.global_batch_size // (processes * per_device)
    assert accumulation * processes * per_device == cfg.train.global_batch_size  # Table 7's batch, whole
    batch = json.loads((tmp_path / "run" / "manifest.json").read_text())["batch"]
    assert batch == {"global_batch_size": cfg.train.global_batch_size, "per_device_train_batch_size": per_device,
                     "gradient_accumulation_steps": accumulation, "world_size": processes}
    arguments = trainer_arguments(cfg, tmp_path / "run" / "checkpoints")
    assert (arguments["per_device_train_batch_size"], arguments["gradient_accumulation_steps"]) == (per_device, accumulation)
