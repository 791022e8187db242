"""Golden runs: the numbers the shipped code produces, committed as expected values.

For the tiny base models and for each trainer (SFT, GLUE, GRPO) on the tiny models under
each clip mode, `tests/golden/runs.json` holds what the code computes, compared exactly
(floats as JSON writes them, which round-trips every bit) by `tests/test_golden_runs.py`:

* `base`: the tiny Llama's build recipe (tokenizer, initialisation, the first pretraining
  steps: losses and a hash of the weights after them), and the cache entries the tests and
  the demo use (the spec hash that names each, a hash of its weights and tokenizer);
* `runs`: per (trainer, clip mode), the first optimizer steps of the trainer's real recipe
  (the CPU recipe's data, batch, schedule and warm-up, stopped after STEPS steps): each
  step's metrics.jsonl record (loss, lr, each group's pre-/post-clip norm, factor, bounds,
  EMA; GRPO's reward, KL, ...).

Everything runs with one CPU thread (`torch.set_num_threads(1)`), in this process.

A change that alters numerics fails the test until the expectations are regenerated, in
the same commit as every committed result it affects (`make demo`; README, "Determinism
and provenance"), with the reason in the commit message:

    make golden            # = python -m tests.golden --regenerate
    python -m tests.golden --check     # what differs, without writing
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

GOLDEN_FILE = Path(__file__).with_name("runs.json")
STEPS = 3  # optimizer steps per golden run
BUILD_STEPS = 3  # pretraining steps of the tiny Llama's build recipe
THREADS = 1
REGENERATE = "make golden  (python -m tests.golden --regenerate)"

CLIP_MODES = ("none", "global", "aggc", "aggc_paper", "aggc_grpo", "adagc")
GLUE_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "glue"
TRAINERS = {
    # the demo's recipe (train=tiny, the whole generated training set): LoRA, as the demo's rows
    "sft": ("model=tiny_llama", "data=arith", "strategy=lora"),
    # LoRA on CoLA's 40-row sample (tests/fixtures/glue), the tiny DeBERTa, train=tiny
    "glue": ("model=tiny_deberta", "data=glue_cola_local", "strategy=lora", "train=tiny", f"data.root={GLUE_FIXTURES}",
             "data.train_file=train_sample.tsv", "data.eval_files.validation=dev_sample.tsv"),
    # full-model GRPO, train=grpo_tiny: 2 prompts x 4 sampled completions per step; a seed
    # whose steps 1 and 2 get unequal rewards within a group (a policy gradient: reward,
    # advantages, PG loss and the clip modes' factors on it; seed 0 rewards nothing in 3 steps)
    "grpo": ("model=tiny_llama", "data=arith", "strategy=grpo", "train=grpo_tiny", "seed=4"),
}
CASES = {f"{trainer}/{clip}": (*overrides, f"clip={clip}", "wandb.mode=disabled",
                               *(["clip.groups=trainable"] if trainer == "grpo" else []))  # a full fine-tune has no LoRA groups
         for trainer, overrides in TRAINERS.items() for clip in CLIP_MODES}
# Full fine-tuning too (another learning rate, every tensor trainable), with its default clip
CASES["sft/full_ft-global"] = ("model=tiny_llama", "data=arith", "strategy=full_ft", "clip=global", "wandb.mode=disabled")


def _config(overrides):
    from hydra import compose, initialize_config_dir

    from aggc.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


class _Threads:
    def __enter__(self):
        import torch

        self.saved = torch.get_num_threads()
        torch.set_num_threads(THREADS)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.saved)


def _stop_after(steps: int):
    """A Trainer callback class that ends training after `steps` optimizer steps, leaving
    the schedule (warm-up, decay over the whole run) as the full run has it."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= steps:
                control.should_training_stop = True
                control.should_save = False
            return control

    return StopAfter


def run_case(name: str, runs_root: Path) -> list[dict]:
    """The first STEPS metrics.jsonl records of golden case `name`, trained in this process."""
    import transformers.trainer

    from aggc.train import rundir
    from aggc.train import run as train_stage

    cfg = _config([*CASES[name], f"runs_root={runs_root}"])
    run_dir = runs_root / name.replace("/", "__")
    saved = list(transformers.trainer.DEFAULT_CALLBACKS)
    transformers.trainer.DEFAULT_CALLBACKS[:] = [*saved, _stop_after(STEPS)]  # every Trainer subclass (SFT, GLUE, GRPO) takes these
    try:
        with _Threads():
            train_stage(cfg, run_dir)
    finally:
        transformers.trainer.DEFAULT_CALLBACKS[:] = saved
    return rundir.read_metrics(run_dir / "metrics.jsonl")


def tensors_sha256(tensors: dict) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(__import__("torch").uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _spec(model: str):
    from omegaconf import OmegaConf

    cfg = _config([f"model={model}"])
    return OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir)


def spec_entry_name(model: str) -> str:
    """The cache entry's name for `model=<model>`, without building it."""
    from aggc.models import tiny

    spec, _ = _spec(model)
    return f"tiny-{'deberta' if spec.get('architecture') else 'llama'}-{tiny.spec_hash(spec)}"


def cache_entry(model: str) -> dict:
    """The cache entry of `model=<model>` that every run uses: its name (the spec's hash,
    so a change to the spec is a new entry), a hash of its weights and of its tokenizer.
    Built first if missing (the Llama pretrains: minutes)."""
    from safetensors.torch import load_file

    from aggc.models import tiny

    spec, cache_dir = _spec(model)
    with _Threads():
        path = (tiny.tiny_deberta_base if spec.get("architecture") else tiny.pretrained_tiny_base)(spec, cache_dir)
    assert path.name == spec_entry_name(model)
    weights = {}
    for file in sorted(path.glob("*.safetensors")):
        weights.update(load_file(file))
    return {"entry": path.name, "weights_sha256": tensors_sha256(weights),
            "tokenizer_sha256": hashlib.sha256((path / "tokenizer.json").read_bytes()).hexdigest()}


def build_first_steps() -> dict:
    """The tiny Llama's build recipe run for its first BUILD_STEPS pretraining steps: what a
    change to the recipe's code (not only its spec) changes, without the full pretraining."""
    import torch
    from omegaconf import OmegaConf

    from aggc.models import tiny

    spec = OmegaConf.to_container(_config(["model=tiny_llama"]).model, resolve=True)
    with _Threads(), torch.random.fork_rng(devices=[]):
        model, tokenizer, losses = tiny.build_pretrained_tiny_llama(spec, stop_after=BUILD_STEPS)
    return {"losses": losses, "weights_sha256": tensors_sha256(model.state_dict()),
            "tokenizer_sha256": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()}


def compute(cases=None) -> dict:
    cases = list(CASES) if cases is None else cases
    with tempfile.TemporaryDirectory(prefix="aggc-golden-") as tmp:
        runs = {name: run_case(name, Path(tmp)) for name in cases}
    return {"base": {"build_first_steps": build_first_steps(),
                     "cache": {m: cache_entry(m) for m in ("tiny_llama", "tiny_deberta")}},
            "runs": runs}


# metrics.jsonl's per-group maps: their keys are the clipper's groups
GROUP_MAPS = ("norms", "post_norms", "factors", "lower", "upper", "ema")


def load() -> dict:
    return json.loads(GOLDEN_FILE.read_text())


def differences(expected, got, where: str = "", rel: float = 0.0) -> list[str]:
    """Every place where `got` differs from `expected` (floats: exactly, or within `rel`).
    A key `got` has and `expected` lacks (a metric added to the log) is no numeric change;
    a group that appears or vanishes is."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: missing" for k in expected if k not in got]
        if where.rsplit(".", 1)[-1] in GROUP_MAPS:
            out += [f"{where}.{k}: unexpected group" for k in got if k not in expected]
        return out + [d for k in expected if k in got for d in differences(expected[k], got[k], f"{where}.{k}", rel)]
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{where}: {len(got)} items, expected {len(expected)}"]
        return [d for i, (e, g) in enumerate(zip(expected, got)) for d in differences(e, g, f"{where}[{i}]", rel)]
    if isinstance(expected, float) and isinstance(got, float) and rel and math.isclose(expected, got, rel_tol=rel):
        return []
    return [] if expected == got and type(expected) is type(got) else [f"{where}: {got!r}, expected {expected!r}"]


def failure_message(what: str, diffs: list[str]) -> str:
    shown = "\n  ".join(diffs[:12]) + (f"\n  ... {len(diffs) - 12} more" if len(diffs) > 12 else "")
    return (f"{what} differs from tests/golden/runs.json:\n  {shown}\n"
            f"If the change is meant to alter numerics: regenerate with `{REGENERATE}`, rerun `make demo` and commit "
            "both with every committed result it changes, saying why in the commit message (README, Determinism and provenance).")


def main(argv=None) -> int:
    import argparse

    global THREADS
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.split("\n\n")[0])
    parser.add_argument("--regenerate", action="store_true", help=f"rewrite {GOLDEN_FILE.name}")
    parser.add_argument("--check", action="store_true", help="compare with the committed values; write nothing")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"torch threads (default {THREADS}, as the test; other values measure what depends on them; never with --regenerate)")
    args = parser.parse_args(argv)
    if args.regenerate and args.threads != THREADS:
        parser.error(f"--regenerate runs with the pinned {THREADS} thread(s)")
    THREADS = args.threads
    got = compute()
    if args.regenerate:
        GOLDEN_FILE.write_text(json.dumps({"steps": STEPS, "build_steps": BUILD_STEPS, "threads": THREADS, **got}, indent=1) + "\n")
        print(f"written: {GOLDEN_FILE}")
        return 0
    diffs = differences({k: v for k, v in load().items() if k in got}, got)
    print(failure_message("golden runs", diffs) if diffs else "golden runs: all equal")
    return 1 if diffs else 0
