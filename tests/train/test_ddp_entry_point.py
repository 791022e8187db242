"""The real entry point under torchrun: 2 gloo processes x batch 4 equal 1 process x batch 8
in every logged group norm and factor, and in the final weights."""

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from aggc.models import load_model_and_tokenizer
from aggc.paths import ROOT
from aggc.train import rundir

from ._helpers import SMOKE, config, only_run, train_cli

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
STEPS = ("train.max_steps=4", "train.save_steps=4")


def test_two_process_ddp_equals_one_process(tmp_path):
    cfg = config()
    load_model_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), cfg.cache_dir)  # build the cached base once

    train_cli(tmp_path / "one", *STEPS, "train.per_device_train_batch_size=8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "aggc.train",
         *SMOKE, f"runs_root={tmp_path / 'two'}", *STEPS, "train.per_device_train_batch_size=4"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    run = only_run
    one, two = rundir.read_metrics(run(tmp_path / "one") / "metrics.jsonl"), rundir.read_metrics(run(tmp_path / "two") / "metrics.jsonl")
    assert rundir.read_json(run(tmp_path / "two") / "manifest.json")["world_size"] == 2
    assert [r["step"] for r in two] == [0, 1, 2, 3], "one record per step: only rank 0 writes the log"
    for a, b in zip(one, two):
        for g in a["norms"]:
            assert b["norms"][g] == pytest.approx(a["norms"][g], rel=1e-5), g
            assert b["factors"][g] == pytest.approx(a["factors"][g], rel=1e-5), g
    wa, wb = load_file(run(tmp_path / "one") / "final" / "model.safetensors"), load_file(run(tmp_path / "two") / "final" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)
