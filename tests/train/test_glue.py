"""The GLUE training stage on the tiny DeBERTa and the shipped GLUE rows (tests/fixtures/glue):
LoRA + AGGC per-group clipping on query/key/value, BitFit, and a task that starts from
another task's run (data.init_from, the paper's MNLI initialisation). STS-B (regression)
trains in tests/evaluate/test_glue_eval.py."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback, set_seed

from aggc import identity
from aggc.config import ConfigError, validate
from aggc.evaluate.glue import evaluate_glue
from aggc.models import load_classifier_and_tokenizer
from aggc.paths import CONF_DIR, ROOT
from aggc.train import glue, rundir, sft
from aggc.train import run as train_stage

pytestmark = pytest.mark.slow
FIXTURES = ROOT / "tests" / "fixtures" / "glue"
QKV = {"query_proj", "key_proj", "value_proj"}
HEAD = ("pooler.", "classifier.")


def glue_config(tmp_path, data="glue_cola_local", *overrides):
    """A few optimizer steps of the tiny DeBERTa on the 40-row fixture of a task."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[
            "model=tiny_deberta", f"data={data}", "train=tiny", f"data.root={FIXTURES}", "data.train_file=train_sample.tsv",
            "data.eval_files.validation=dev_sample.tsv", "train.max_steps=3", "train.save_steps=3",
            "train.per_device_train_batch_size=8", "wandb.mode=disabled", f"runs_root={tmp_path}", *overrides])


def run_dir(cfg) -> Path:
    return identity.run_dir(cfg)


def initial_weights(cfg) -> dict[str, torch.Tensor]:
    """The classifier a run starts from: the cached base and the head drawn after set_seed."""
    set_seed(cfg.seed)
    model, _ = load_classifier_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir),
                                             cfg.data.num_labels)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lora_with_aggc_clips_query_key_value_groups(tmp_path):
    """strategy=aggc on CoLA: one clip group per projection type (the adapter tensors),
    AGGC's cap acting after step 0, adapters merged into a DeBERTa classifier whose
    head (pooler + classifier, peft modules_to_save) trained too."""
    cfg = glue_config(tmp_path, "glue_cola_local", "strategy=aggc")
    run = train_stage(cfg, run_dir(cfg))  # the stage's dispatch: model.task=seq_cls -> GLUE
    assert (run / "COMPLETED").exists()
    records = rundir.read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    groups = QKV | {"head:classifier"}  # the trained head (pooler + classifier) is clipped in a group of its own
    for r in records:
        assert set(r["norms"]) == groups and all(r["norms"][g] > 0 for g in groups)
        for g in groups:
            assert r["post_norms"][g] == pytest.approx(r["norms"][g] * r["factors"][g], rel=1e-6)
    assert any(f != 1.0 for r in records[1:] for f in r["factors"].values()), "AGGC's cap must act after step 0"
    state = torch.load(run / "checkpoints" / "checkpoint-3" / "clipper.pt", weights_only=True)
    adapters = [n for n in state["param_names"] if "lora_" in n]
    assert state["step"] == 3 and {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters} == QKV
    assert {n for n in state["param_names"] if n not in adapters} == {
        n for n in state["param_names"] if "modules_to_save" in n} and len(adapters) < len(state["param_names"])

    final = load_file(run / "final" / "model.safetensors")
    assert not any("lora" in k or "modules_to_save" in k for k in final)
    start = initial_weights(cfg)
    assert set(final) == set(start)
    for key in ("classifier.weight", "pooler.dense.weight", "deberta.encoder.layer.0.attention.self.value_proj.weight"):
        assert not torch.equal(final[key], start[key]), f"{key} must have trained (merged)"
    assert torch.equal(final["deberta.encoder.layer.0.attention.output.dense.weight"],
                       start["deberta.encoder.layer.0.attention.output.dense.weight"]), "LoRA touches only q/k/v"
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["architectures"] == ["DebertaV2ForSequenceClassification"] and config["id2label"] == {
        "0": "unacceptable", "1": "acceptable"}


def test_bitfit_trains_only_biases_and_the_head(tmp_path):
    cfg = glue_config(tmp_path, "glue_sst2_local", "strategy=bitfit")
    run = glue.run(cfg, run_dir(cfg))
    start, final = initial_weights(cfg), load_file(run / "final" / "model.safetensors")
    changed = {k for k in start if not torch.equal(start[k], final[k])}
    trainable = {k for k in start if k.endswith(".bias") or k.startswith(HEAD)}
    assert changed <= trainable, sorted(changed - trainable)
    assert any(k.endswith(".bias") and not k.startswith(HEAD) for k in changed), "biases of the encoder must train"
    assert "classifier.weight" in changed
    state = torch.load(run / "checkpoints" / "checkpoint-3" / "clipper.pt", weights_only=False)
    assert set(state["param_names"]) == trainable  # the global clip sees exactly the trainable tensors
    assert state["param_names"]


def test_select_best_epoch_keeps_the_best_dev_epoch_as_final(tmp_path):
    """train.select_best=epoch (the paper's LoRA-codebase protocol): the dev score after
    every epoch is in the manifest, and final/ is the best epoch's model, so the evaluation
    stage scores exactly the best of them, here where the last epoch scored lower (STS-B
    Pearson: continuous, so epochs differ on 40 rows; 5 steps per epoch)."""
    cfg = glue_config(tmp_path, "glue_stsb_local", "strategy=aggc", "data.init_from=null", "train.max_steps=-1",
                      "train.num_train_epochs=4", "train.learning_rate=2e-2", "train.select_best=epoch")
    run = glue.run(cfg, run_dir(cfg))
    selection = json.loads((run / "manifest.json").read_text())["selection"]
    assert selection["metric"] == "pearson" and [e["epoch"] for e in selection["epochs"]] == [1, 2, 3, 4]
    per_epoch = [e["pearson"] for e in selection["epochs"]]
    best = max(per_epoch)
    assert selection["best"] == best and selection["best_checkpoint"] == f"checkpoint-{5 * (per_epoch.index(best) + 1)}"
    assert per_epoch[-1] < best, f"the fixture must make the last epoch worse than the best: {per_epoch}"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        eval_cfg = compose("evaluate", overrides=[f"run={run}", "eval=glue_stsb"])
    result = evaluate_glue(eval_cfg, run, run / "final")
    assert result["score"] == pytest.approx(best, rel=1e-4)
    assert selection["best_epoch"] == per_epoch.index(best) + 1
    assert result["scored_model"] == f"best epoch on dev pearson: {selection['best_epoch']} of 4"
    assert selection["num_train_epochs"] == 4


def test_select_best_epoch_resumes_after_a_crash_to_the_same_selection(tmp_path, monkeypatch):
    """A select_best=epoch run that dies right after the best epoch's checkpoint (epoch 3 of
    4) resumes there, with the best so far restored from the Trainer's state: it keeps
    epoch 3 although epoch 4, the only one it scores after the restart, is worse; the same
    per-epoch scores, best epoch and final weights as a run never stopped."""
    overrides = ("strategy=aggc", "data.init_from=null", "train.max_steps=-1", "train.num_train_epochs=4",
                 "train.learning_rate=2e-2", "train.select_best=epoch")
    straight_cfg = glue_config(tmp_path / "straight", "glue_stsb_local", *overrides)
    straight = glue.run(straight_cfg, run_dir(straight_cfg))

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 15:
                raise RuntimeError("crash after checkpoint-15")

    class CrashingTrainer(glue.GLUETrainer):
        def __init__(self, *args, callbacks, **kwargs):
            super().__init__(*args, callbacks=[*callbacks, Crash()], **kwargs)  # after the clip callback's save

    cfg = glue_config(tmp_path / "crashed", "glue_stsb_local", *overrides)
    with monkeypatch.context() as patch:
        patch.setattr(glue, "GLUETrainer", CrashingTrainer)
        with pytest.raises(RuntimeError, match="crash after checkpoint-15"):
            glue.run(cfg, run_dir(cfg))
    assert not (run_dir(cfg) / "COMPLETED").exists()
    resumed = glue.run(cfg, run_dir(cfg))
    manifest, expected = json.loads((resumed / "manifest.json").read_text()), json.loads((straight / "manifest.json").read_text())
    assert manifest["resumed_from"] == ["checkpoint-15"]
    assert manifest["selection"] == expected["selection"] and manifest["selection"]["best_epoch"] == 3
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_select_best_epoch_is_refused_where_it_cannot_apply(tmp_path):
    with pytest.raises(ConfigError, match="train.max_steps=-1"):
        validate(glue_config(tmp_path, "glue_sst2_local", "train.select_best=epoch"))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        causal = compose("config", overrides=["model=tiny_llama", "train=tiny", "train.select_best=epoch", "train.max_steps=-1"])
    with pytest.raises(ConfigError, match="only GLUE runs"):
        validate(causal)
    with pytest.raises(ConfigError, match="train.select_best='best'"):
        validate(glue_config(tmp_path, "glue_sst2_local", "train.select_best=best"))


def test_bitfit_refuses_a_model_without_biases():
    from aggc.train.strategy import bitfit

    with pytest.raises(ConfigError, match="no bias parameters"):
        bitfit(torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False)))


def predecessor_dir(cfg, data: str) -> Path:
    """Where a run of `data` with this run's choices lives (the cell id is any)."""
    return Path(cfg.runs_root) / cfg.model.name / data / f"{cfg.strategy.name}-{cfg.clip.name}-0123456789" / f"seed{cfg.seed}"


def fake_predecessor(cfg, data: str) -> dict[str, torch.Tensor]:
    """A COMPLETED run of `data` (same model/strategy/clip/seed) whose final weights are the
    base's with a marked backbone tensor and head: what init_from must and must not take."""
    pred = predecessor_dir(cfg, data)
    weights = initial_weights(cfg)
    weights["deberta.encoder.layer.0.attention.output.dense.weight"] += 0.5
    weights["classifier.weight"] += 3.0
    set_seed(cfg.seed)
    model, tokenizer = load_classifier_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir),
                                                     cfg.data.num_labels)
    model.save_pretrained(pred / "final")
    tokenizer.save_pretrained(pred / "final")
    save_file({k: v.contiguous() for k, v in weights.items()}, pred / "final" / "model.safetensors")
    rundir.mark_completed(pred, {"global_step": 1})
    return weights


def test_init_from_starts_the_backbone_from_the_predecessor_run(tmp_path):
    """data=glue_rte_local starts from the SST-2 run (its init_from, the local stand-in for
    MNLI): the backbone is the predecessor's final weights (a tensor LoRA never trains keeps
    the predecessor's marked value exactly), the head is new (the base's seeded draw)."""
    cfg = glue_config(tmp_path, "glue_rte_local", "strategy=lora", "train.max_steps=2", "train.save_steps=2")
    assert cfg.data.init_from == "glue_sst2_local"
    marked = fake_predecessor(cfg, "glue_sst2_local")
    run = glue.run(cfg, run_dir(cfg))
    final, start = load_file(run / "final" / "model.safetensors"), initial_weights(cfg)
    key = "deberta.encoder.layer.0.attention.output.dense.weight"
    assert torch.equal(final[key], marked[key]) and not torch.equal(final[key], start[key])
    assert torch.equal(final["deberta.embeddings.word_embeddings.weight"], marked["deberta.embeddings.word_embeddings.weight"])
    # the head was re-drawn, not copied: it trained from the base's draw, far from the marked one
    assert (final["classifier.weight"] - start["classifier.weight"]).abs().max() < 0.5
    assert (final["classifier.weight"] - marked["classifier.weight"]).abs().min() > 2.0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["init_from"] == str(predecessor_dir(cfg, "glue_sst2_local"))


def test_init_from_without_a_completed_predecessor_fails_before_training(tmp_path):
    cfg = glue_config(tmp_path, "glue_rte_local", "strategy=aggc")
    with pytest.raises(ConfigError, match=r"data.init_from=glue_sst2_local: this run starts from the COMPLETED "
                                          r"glue_sst2_local run .* and there is none. Train it first: python -m aggc.train "
                                          r"model=tiny_deberta data=glue_sst2_local strategy=aggc clip=aggc seed=0"):
        glue.run(cfg, run_dir(cfg))
    assert not run_dir(cfg).exists(), "nothing may be written before the check"
    (predecessor_dir(cfg, "glue_sst2_local") / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="there is none"):  # interrupted, not finished
        glue.run(cfg, run_dir(cfg))


def test_each_stage_refuses_the_other_kind_of_model(tmp_path):
    with pytest.raises(ConfigError, match="GLUE stage"):
        sft.run(glue_config(tmp_path), tmp_path / "sft")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        causal = compose("config", overrides=["model=tiny_llama", "data=glue_cola", f"runs_root={tmp_path}"])
        not_glue = compose("config", overrides=["model=tiny_deberta", "data=arith", f"runs_root={tmp_path}"])
    with pytest.raises(ConfigError, match="sequence classifiers"):
        glue.run(causal, tmp_path / "glue")
    with pytest.raises(ConfigError, match="not a GLUE task"):
        train_stage(not_glue, tmp_path / "arith")
    assert not (tmp_path / "glue").exists() and not (tmp_path / "arith").exists()


def test_same_seed_same_run_on_an_empty_and_a_warm_cache(tmp_path, one_thread):
    """Building the tiny base into an empty cache draws random numbers; the run's own
    randomness (the new head, data order) must not depend on whether that happened."""
    cold = glue_config(tmp_path / "cold", "glue_cola_local", "strategy=aggc", f"cache_dir={tmp_path / 'cache'}")
    warm = glue_config(tmp_path / "warm", "glue_cola_local", "strategy=aggc", f"cache_dir={tmp_path / 'cache'}")
    runs = [glue.run(cfg, run_dir(cfg)) for cfg in (cold, warm)]  # the first builds the cache, the second reads it
    assert [r["norms"] for r in rundir.read_metrics(runs[0] / "metrics.jsonl")] == \
           [r["norms"] for r in rundir.read_metrics(runs[1] / "metrics.jsonl")]
    a, b = (load_file(r / "final" / "model.safetensors") for r in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
