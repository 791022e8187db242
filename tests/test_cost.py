"""The grid's cost and fit (aggc.cost): models built on the meta device from the shipped
published configs have the published sizes; the plan shows each cell's global batch,
precision, GPUs, memory and fit; a cell that cannot fit is not submitted; the MT-Bench judge
on localhost is flagged under Slurm."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from aggc import cost, grid
from aggc.paths import CONF_DIR, ROOT

# The model cards' parameter counts (embeddings included).
PUBLISHED_SIZES = {"llama2_7b": 6.74e9, "mistral_7b": 7.24e9, "gemma_7b": 8.54e9, "qwen25_1_5b_instruct": 1.54e9,
                   "qwen25_3b_instruct": 3.09e9, "llama32_3b_instruct": 3.21e9, "deberta_v3_base": 184e6}


def composed(*overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("model, size", PUBLISHED_SIZES.items())
def test_meta_built_models_have_their_published_sizes(model, size):
    """The shipped config.json files carry the published dimensions: the model built from each
    on the meta device (no weights) counts the parameters its model card states."""
    cfg = composed(f"model={model}", "strategy=full_ft", *(["data=glue_mnli"] if model == "deberta_v3_base" else []))
    built = cost._build(cost._key(cfg))
    trainable, total = built["trainable"], built["total"]
    assert trainable == total
    assert abs(total - size) / size < 0.01, (model, total)


def test_lora_counts_come_from_the_strategy_as_training_applies_it():
    """Llama-2-7B, r = 128 on the seven linear modules: r x (in + out) per adapted matrix."""
    cfg = composed("model=llama2_7b", "strategy=aggc")
    h, i, layers, r = 4096, 11008, 32, 128
    per_layer = 4 * r * (h + h) + 2 * r * (h + i) + r * (i + h)
    built = cost._build(cost._key(cfg))
    assert (built["trainable"], built["groups"], built["tensors"]) == (layers * per_layer, 7, 7 * 2 * layers)


def test_memory_shrinks_with_sharding_and_checkpointing():
    gpu = OmegaConf.create({"memory_gb": 80, "peak_tflops": {"bf16": 312, "fp32": 19.5}, "mfu": 0.35, "name": "x"})
    full = composed("model=mistral_7b", "data=metamathqa", "strategy=full_ft", "train=paper_sft", "train.fsdp=full_shard")
    one, four = cost.estimate(full, 1, gpu), cost.estimate(full, 4, gpu)
    assert four.memory["optimizer"] == pytest.approx(one.memory["optimizer"] / 4) and four.memory["total"] < one.memory["total"]
    assert one.memory["optimizer"] == pytest.approx(8 * one.trainable / cost.GIB)  # AdamW: two float32 states
    lora = composed("model=mistral_7b", "data=metamathqa", "strategy=lora", "train=paper_sft")
    kept = cost.estimate(composed("model=mistral_7b", "data=metamathqa", "strategy=lora", "train=paper_sft",
                                  "train.activation_checkpointing=true"), 1, gpu)
    assert kept.memory["activations"] < cost.estimate(lora, 1, gpu).memory["activations"] / 4
    assert kept.gpu_hours > cost.estimate(lora, 1, gpu).gpu_hours  # the recomputed forward


@pytest.fixture(scope="module")
def table1_plan():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("grid", overrides=["table=table1", "runs_root=/nonexistent", "dry_run=true"])
        spec = OmegaConf.to_container(cfg.table, resolve=True)
        cells = grid.cells(spec)
        evals = grid.eval_configs(cfg, spec, [b for c in cells for b in c.benchmarks])
        return spec, cells, evals, cfg


def test_table1_plan_shows_table7s_batch_precision_gpus_and_fit(table1_plan, capsys):
    """`make table1 DRY_RUN=1`: every cell with its training set's Table 7 batch, the paper's
    float32, the row's GPUs (Full FT: 4), a memory estimate that fits, and the grid's total."""
    spec, cells, evals, cfg = table1_plan
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        estimates = grid.cost_and_fit(cfg, spec, cells, evals)
    out = capsys.readouterr().out
    assert len(estimates) == 3 * 3 * 4
    for (model, data, row), e in estimates.items():
        label = spec["rows"][row]["label"]
        assert e.global_batch == {"metamathqa": 32, "codefeedback": 128, "wizardlm": 64}[data]
        assert e.precision == "float32 weights" and e.gpus == (4 if label == "Full FT" else 1)
        assert e.fits and 0 < e.memory["total"] <= cfg.gpu.memory_gb and e.gpu_hours > 0
        line = next(li for li in out.splitlines() if li.split()[:2] == [model, data] and f" {label} " in li)
        assert f" {e.global_batch} float32 weights " in line and f"{e.memory['total']:.1f} = " in line
    assert f"total: {len(cells)} training cells, " in out and "GPU-hours of training" in out


def test_a_cell_that_cannot_fit_is_flagged_and_not_submitted(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", "table=table4", "dry_run=true", f"runs_root={tmp_path}",
                           "gpu.memory_gb=16"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " NO " in proc.stdout and "not submitted: 15 training cells" in proc.stdout
    assert (tmp_path / "plan" / "table4.train.txt").read_text() == ""
    assert "would run: -m aggc.train" not in proc.stdout


@pytest.mark.parametrize("url, launcher, warned", [
    ("http://127.0.0.1:8000/v1", "slurm", True), ("http://localhost:8000/v1", "slurm_local", True),
    ("http://127.0.0.1:8000/v1", "local", False), ("http://judge.cluster:8000/v1", "slurm", False)])
def test_a_localhost_judge_is_flagged_under_slurm(url, launcher, warned):
    eval_cfg = OmegaConf.create({"eval": {"judge": {"base_url": url}}})
    assert bool(cost.judge_warning(eval_cfg, launcher)) == warned


@pytest.mark.parametrize("relative", [False, True], ids=["absolute runs_root", "relative runs_root"])
@pytest.mark.parametrize("trained", [False, True])
def test_a_model_that_is_another_runs_checkpoint_is_costed(tmp_path, monkeypatch, trained, relative):
    """make demo-real-grpo's cells start from a run's model (model.hub_id=<run>/final): the plan
    reads that checkpoint's config.json, or before the run has trained, the published one of
    the model config it came from; it is reported as a local checkpoint, never looked up on
    the hub (a path is no repo id: the plan crashed; so did `make demo-real-grpo DRY_RUN=1` with
    the Makefile's relative runs_root, `runs/demo-real/<model>/<data>/<cell>/seed0/final`)."""
    final = tmp_path / "runs" / "demo-real" / "run" / "seed0" / "final"
    if relative:
        monkeypatch.chdir(tmp_path)
        final = final.relative_to(tmp_path)
    if trained:
        final.mkdir(parents=True)
        (final / "config.json").write_text((cost.PUBLISHED / "HuggingFaceTB" / "SmolLM2-135M-Instruct" / "config.json").read_text())
    cfg = composed("model=smollm2_135m", "data=arith", "strategy=grpo", "train=grpo_tiny", "model.kind=hub",
                   f"model.hub_id={final}", f"cache_dir={tmp_path / 'cache'}")
    gpu = OmegaConf.create({"memory_gb": 80, "peak_tflops": {"bf16": 312, "fp32": 19.5}, "mfu": 0.35, "name": "x"})
    e = cost.estimate(cfg, 1, gpu)
    assert e.trainable == e.total and abs(e.total - 134.5e6) / 134.5e6 < 0.01 and e.fits
    assert cost.model_reachable(cfg.model) == ("local checkpoint" if trained else f"NOT YET TRAINED ({final})")


@pytest.mark.parametrize("hub_id, local", [("Qwen/Qwen2.5-3B", False), ("gpt2", False), ("myrun/final", True),
                                           ("myrun/final", False), ("runs/a/b/final", True), ("/abs/final", True)])
def test_a_hub_id_is_a_local_checkpoint_exactly_when_transformers_reads_it_as_a_directory(tmp_path, monkeypatch, hub_id, local):
    """A repo id (`name`, `owner/name`) is looked up on the hub; a path of more parts, an
    absolute one, or an existing directory (a two-part `myrun/final` here, which
    from_pretrained loads as a directory) is a checkpoint: the plan had looked the last up
    among published configs and crashed. A GGUF model is never one."""
    monkeypatch.chdir(tmp_path)
    if local and not hub_id.startswith("/") and len(Path(hub_id).parts) == 2:
        (tmp_path / hub_id).mkdir(parents=True)
    assert cost.local_checkpoint({"kind": "hub", "hub_id": hub_id}) == (Path(hub_id) if local else None)
    assert cost.local_checkpoint({"kind": "gguf", "hub_id": hub_id}) is None


@pytest.mark.parametrize("target", ["table1", "table2", "table3", "table4", "table5", "table8", "figure6"])
def test_every_cell_of_every_paper_target_fits_its_gpus(target, capsys):
    """The plan never drops a paper cell as unfit at the default GPU (gpu in conf/grid.yaml): a
    row whose model needs more than one GPU asks for them (resources.gpus). Figure 6's Full FT
    row did not (125 GiB on one 80 GB GPU): make figure6 would have left out its reference."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("grid", overrides=[f"table={target}", "runs_root=/nonexistent", "dry_run=true"])
        spec = OmegaConf.to_container(cfg.table, resolve=True)
        cells = grid.cells(spec)
        evals = grid.eval_configs(cfg, spec, [b for c in cells for b in c.benchmarks])
        estimates = grid.cost_and_fit(cfg, spec, cells, evals)
    unfit = {key: round(e.memory["total"]) for key, e in estimates.items() if not e.fits}
    assert not unfit, f"{target}: cells that do not fit {cfg.gpu.memory_gb} GB per GPU (GiB): {unfit}"
