"""The training stage end to end on the embedded tiny default (tiny Llama + arith)."""

import json
import signal
import time
from pathlib import Path

import pytest
import yaml
import torch
from safetensors.torch import load_file

from aggc.config import clip_config
from aggc.identity import find_runs, run_dir
from aggc.replay import read_norms, replay
from aggc.train import rundir, sft

from ._helpers import config, only_run, train_cli

pytestmark = pytest.mark.slow
MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def run_dir_of(root, strategy="aggc", clip="aggc", seed=0):
    return only_run(root, strategy=strategy, clip=clip, seed=seed)


def test_cli_run_directory_has_everything(tmp_path):
    """`python -m aggc.train model=tiny_llama data=arith strategy=aggc` writes the resolved
    config, a manifest, per-step metrics for all seven groups, checkpoints with the
    clipper state, the merged final model, wandb's offline run, and COMPLETED last."""
    train_cli(tmp_path, "strategy=aggc", "wandb.mode=offline")
    run = run_dir_of(tmp_path)
    assert (run / "COMPLETED").exists()
    assert "semantics: reference" in (run / "config.yaml").read_text()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["packages"]["torch"].startswith("2.13") and manifest["host"]
    assert manifest["git_commit"] and manifest["peak_rss_mb"] > 0

    records = rundir.read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(6))
    for r in records:
        assert set(r["norms"]) == MODULES and set(r["factors"]) == MODULES
        assert r["loss"] > 0 and r["lr"] is not None
        for g in MODULES:
            assert r["post_norms"][g] == pytest.approx(r["norms"][g] * r["factors"][g], rel=1e-6)
    assert any(f != 1.0 for r in records[1:] for f in r["factors"].values()), "AGGC's cap must act after step 0"
    # the log is replayable: the same settings on the logged norms give the applied factors
    replayed = replay(read_norms(run / "metrics.jsonl"), clip_config(config("strategy=aggc")), total_steps=6)
    for r, again in zip(records, replayed):
        for g in MODULES:
            assert again["groups"][g]["scale"] == pytest.approx(r["factors"][g], rel=1e-9)

    for step in (3, 6):
        state = torch.load(run / "checkpoints" / f"checkpoint-{step}" / "clipper.pt", weights_only=True)
        assert state["step"] == step and state["total_steps"] == 6 and state["ema"].shape == (7,)

    merged = load_file(run / "final" / "model.safetensors")
    assert merged and not any("lora" in k for k in merged), "adapters are merged into the final model"
    assert list((run / "wandb").glob("offline-run-*"))

    again = train_cli(tmp_path, "strategy=aggc")  # same command: already done
    assert "COMPLETED" in again.stdout + again.stderr


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    """SIGKILL mid-run, then the newest whole checkpoint truncated (a disk filled while it
    was copied): the same command again passes over it with a warning, resumes from the one
    before, and ends with the same weights, clipper state and log as a run never killed."""
    overrides = ("train.max_steps=12", "train.save_steps=3", "train.save_total_limit=10")
    train_cli(tmp_path / "straight", *overrides)

    proc = train_cli(tmp_path / "killed", *overrides, wait=False)
    run = run_dir(config(*overrides, f"runs_root={tmp_path / 'killed'}"))
    deadline = time.time() + 300
    while not rundir.is_whole(run / "checkpoints" / "checkpoint-6"):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "COMPLETED").exists(), "the kill must land before the run ends"
    newest = rundir.last_checkpoint(run / "checkpoints")
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    previous = rundir.last_checkpoint(run / "checkpoints")
    assert rundir.checkpoint_step(previous) < rundir.checkpoint_step(newest)

    resumed = train_cli(tmp_path / "killed", *overrides)
    assert f"{newest} is not a whole checkpoint" in resumed.stdout + resumed.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["resumed_from"] == [previous.name], "the second start resumes from the last whole checkpoint"
    assert len(manifest["starts"]) == 2 and json.loads((run / "COMPLETED").read_text())["processes"] == 2

    straight = run_dir_of(tmp_path / "straight")
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(run / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(straight / "checkpoints" / "checkpoint-12" / "clipper.pt", weights_only=True)
    sb = torch.load(run / "checkpoints" / "checkpoint-12" / "clipper.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 12 and torch.equal(sa["ema"], sb["ema"])
    ma, mb = rundir.read_metrics(straight / "metrics.jsonl"), rundir.read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in mb] == list(range(12))
    assert [r["norms"] for r in ma] == [r["norms"] for r in mb]


@pytest.mark.parametrize(
    "overrides, groups, adapter_only",
    [
        (("strategy=full_ft",), {"embed", "norm"} | MODULES, False),  # lm_head is tied to embed
        (("strategy=dora", "clip=aggc"), MODULES, True),
        (("strategy=lora", "clip=adagc"), MODULES, True),
    ],
)
def test_strategies_train_and_log_their_groups(tmp_path, overrides, groups, adapter_only):
    """Full FT clips every trainable tensor (global); DoRA's magnitude vectors join their
    module's group; AdaGC logs per-group effective factors."""
    cfg = config(*overrides, "train.max_steps=2", "train.save_steps=2")
    sft.run(cfg, tmp_path)
    records = rundir.read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 2 and set(records[0]["norms"]) == groups
    state = torch.load(tmp_path / "checkpoints" / "checkpoint-2" / "clipper.pt", weights_only=True)
    assert all(("lora_" in n) == adapter_only for n in state["param_names"])
    if "strategy=dora" in overrides:
        assert any("lora_magnitude_vector" in n for n in state["param_names"])


def test_base_strategy_keeps_the_model_as_it_comes(tmp_path):
    """strategy=base trains nothing: final/ holds the base model's exact weights, so the
    evaluation stage can score "no training" like any other run."""
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from aggc.models import load_model_and_tokenizer

    cfg = config("strategy=base")
    sft.run(cfg, tmp_path)
    assert (tmp_path / "COMPLETED").exists() and not (tmp_path / "checkpoints").exists()
    base, _ = load_model_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir))
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    for (name, a), (_, b) in zip(base.state_dict().items(), final.state_dict().items()):
        assert torch.equal(a, b), name


def test_cli_sweep_gives_each_job_its_run_directory(tmp_path):
    """`-m clip.beta=0.5,0.9` is a Hydra multirun: each job lands in its own config's run
    directory, the one a single command with that value reaches (and finds COMPLETED)."""
    steps = ("train.max_steps=2", "train.save_steps=2")
    train_cli(tmp_path, "-m", "strategy=aggc", "clip.beta=0.5,0.9", *steps)
    runs = find_runs(tmp_path, "tiny_llama", "arith", "aggc", "aggc", 0)
    assert len(runs) == 2
    for run in runs:
        assert (run / "COMPLETED").exists()
    betas = {run: yaml.safe_load((run / "config.yaml").read_text())["clip"]["beta"] for run in runs}
    assert sorted(betas.values()) == [0.5, 0.9]
    again = train_cli(tmp_path, "strategy=aggc", "clip.beta=0.9", *steps)
    assert "COMPLETED" in again.stdout + again.stderr
    assert len(find_runs(tmp_path, "tiny_llama", "arith", "aggc", "aggc", 0)) == 2
