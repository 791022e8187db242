"""The clipper's contract, for every trainer: once per optimizer step it sees the full,
mean, reduced gradient of every trainable tensor. So the group norms it logs do not depend
on how a global batch of 8 is laid out: one process x batch 8, one process x batch 2 x
accumulation 4, 2 DDP processes (gloo) x batch 4, or 2 DDP processes x batch 2 x
accumulation 2 (GRPO: a generation batch of 2 micro-batches per process). Dropout is off (DeBERTa's by
`model.dropout=0`; the tiny Llama and the LoRA adapters have none), so the layouts compute
the same gradient; GRPO samples each completion from its own seed (`grpo.LayoutFreeSampling`),
so every layout trains on the same completions. A new trainer joins
TRAINERS and inherits the test."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from aggc.paths import CONF_DIR, ROOT
from aggc.train import rundir
from aggc.train import run as train_stage

pytestmark = pytest.mark.slow
GLUE_FIXTURES = ROOT / "tests" / "fixtures" / "glue"

TRAINERS = {
    "sft": ("model=tiny_llama", "data=arith", "strategy=aggc", "data.train_size=64"),
    # LoRA + AGGC on CoLA: the adapters' groups and the task head's (head:classifier)
    "glue": ("model=tiny_deberta", "model.dropout=0.0", "data=glue_cola_local", "strategy=aggc", "train=tiny", f"data.root={GLUE_FIXTURES}",
             "data.train_file=train_sample.tsv", "data.eval_files.validation=dev_sample.tsv"),
    # Full-model GRPO + AGGC: one generation batch of 2 prompts x 4 completions per step;
    # completions of up to 32 tokens and a seed whose steps 0 and 1 get rewards that differ
    # within a group: a policy gradient (norms ~0.3), not only the KL term's, which is ~1e-9
    # here (seed 0: every reward 0) and float noise between layouts (checked in norms_seen)
    "grpo": ("model=tiny_llama", "data=arith", "strategy=grpo_aggc", "train=grpo_tiny", "data.train_size=64",
             "train.grpo.max_completion_length=32", "seed=5"),
}
STEPS = ("train.max_steps=3", "train.save_steps=3", "wandb.mode=disabled")
# layout -> (processes, per-device batch, accumulation): always a global batch of 8
LAYOUTS = {"batch 8": (1, 8, 1), "batch 2 x accumulation 4": (1, 2, 4), "2 DDP processes x batch 4": (2, 4, 1),
           "2 DDP processes x batch 2 x accumulation 2": (2, 2, 2)}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def overrides(trainer: str, runs_root: Path, batch: int, accumulation: int) -> list[str]:
    return [*TRAINERS[trainer], *STEPS, f"runs_root={runs_root}", f"train.per_device_train_batch_size={batch}",
            f"train.gradient_accumulation_steps={accumulation}"]


def norms_seen(trainer: str, tmp_path: Path, layout: str) -> list[dict]:
    """The per-step group norms (before clipping) the clipper logged for `layout`."""
    processes, batch, accumulation = LAYOUTS[layout]
    run_dir = tmp_path / layout.replace(" ", "_")
    args = overrides(trainer, tmp_path / "runs", batch, accumulation)
    if processes == 1:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            train_stage(compose("config", overrides=args), run_dir)
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
             "-m", "aggc.train", *args, f"hydra.run.dir={run_dir}"],
            cwd=ROOT, env=ENV, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert rundir.read_json(run_dir / "manifest.json")["world_size"] == processes
    records = rundir.read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2], "one record per optimizer step"
    if trainer == "grpo":
        assert any(r["frac_reward_zero_std"] < 1 for r in records), "no prompt group got unequal rewards: no policy gradient"
    return [r["norms"] for r in records]


@pytest.fixture(scope="module")
def reference_norms(tmp_path_factory):
    """Each trainer's norms with the whole batch of 8 in one micro-batch of one process."""
    cache = {}

    def get(trainer):
        if trainer not in cache:
            cache[trainer] = norms_seen(trainer, tmp_path_factory.mktemp(trainer), "batch 8")
        return cache[trainer]

    return get


@pytest.mark.parametrize("trainer, layout", [(t, name) for t in sorted(TRAINERS) for name in LAYOUTS
                                             if name != "batch 8"])
def test_clipper_sees_the_same_group_norms_however_the_batch_is_laid_out(trainer, layout, reference_norms, tmp_path, one_thread):
    expected = reference_norms(trainer)
    assert any(all(norm > 0 for norm in step.values()) for step in expected), "some step must have a gradient in every group"
    seen = norms_seen(trainer, tmp_path, layout)
    assert all(set(step) == set(expected[0]) for step in seen + expected), "the same groups at every step"
    for step, (want, got) in enumerate(zip(expected, seen)):
        for group in want:
            assert got[group] == pytest.approx(want[group], rel=1e-4), f"step {step}, group {group}: {got[group] / want[group]:.6f}x"
