"""Every shipped config composes and validates; bad values fail at config time, naming the key."""

import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir

from aggc.config import ConfigError, validate
from aggc.paths import CONF_DIR, ROOT

GROUPS = ("model", "data", "strategy", "clip", "train", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_shipped_config_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "strategy" and option.startswith("grpo"):
        overrides.append("train=grpo_tiny")  # GRPO strategies need a GRPO recipe
    if group == "clip" and option in ("aggc", "aggc_paper", "adagc", "none"):
        overrides.append("strategy=lora")  # adapter-only presets need adapters
    if group == "train" and option == "paper_glue":
        overrides += ["model=deberta_v3_base", "data=glue_cola"]  # Table 6: looked up by GLUE task and strategy
    if group == "train" and option.startswith("paper_sft"):
        overrides.append("data=metamathqa")  # Table 7: the global batch is looked up by training set
    cfg = composed(*overrides)
    validate(cfg)
    assert cfg[group if group != "experiment" else "model"] is not None


def test_strategy_selects_its_clip_preset_and_cli_overrides_it():
    assert composed("strategy=aggc").clip.name == "aggc"
    assert composed("strategy=lora").clip.name == "global"
    assert composed("strategy=lora", "clip=none").clip.mode == "none"
    assert composed("strategy=aggc", "clip.beta=0.5").clip.beta == 0.5


@pytest.mark.parametrize(
    "override, key",
    [
        ("clip.beta=1.0", "clip.beta"),
        ("clip.beta=-0.1", "clip.beta"),
        ("clip.min_norm=-1", "clip.min_norm"),
        ("clip.max_down_scale=-0.5", "clip.max_down_scale"),
        ("clip.semantics=papr", "clip.semantics"),
        ("clip.schedule.kind=cosine", "clip.schedule.kind"),
        ("clip.schedule.start=0.8", "clip.schedule.start + clip.schedule.width"),
        ("clip.schedule.width=0", "clip.schedule.width"),
        ("clip.nonfinite=ignore", "clip.nonfinite"),
        ("clip.groups=all", "clip.groups"),
        ("+clip.betta=0.9", "clip.betta"),
        ("clip.alpha_high.late=-1", "clip.alpha_high.late"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("train.per_device_train_batch_size=0", "train.per_device_train_batch_size"),
        ("data.kind=ftp", "data.kind"),
        # values Hydra accepts but the Trainer, the loader or numpy cannot use: refused at compose time too
        ("clip.max_norm=nan", "clip.max_norm"),
        ("train.learning_rate=nan", "train.learning_rate"),
        ("train.learning_rate=inf", "train.learning_rate"),
        ("train.warmup_ratio=abc", "train.warmup_ratio"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("train.num_train_epochs=0", "train.num_train_epochs"),
        ("train.max_steps=abc", "train.max_steps"),
        ("train.max_steps=1.5", "train.max_steps"),
        ("train.logging_steps=0", "train.logging_steps"),
        ("train.save_total_limit=-1", "train.save_total_limit"),
        ("train.dataloader_num_workers=-1", "train.dataloader_num_workers"),
        ("train.lr_scheduler_type=cosin", "train.lr_scheduler_type"),
        ("train.bf16=maybe", "train.bf16"),
        ("train.activation_checkpointing=1", "train.activation_checkpointing"),
        ("strategy.peft.dropout=abc", "strategy.peft.dropout"),
        ("model.dtype=float64", "model.dtype"),
        ("data.train_size=0", "data.train_size"),
        ("seed=-1", "seed"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    """A bad value is a ConfigError naming its key (the CLI prints it in two lines), never a
    TypeError from comparing it or a failure after the model is built."""
    overrides = [override] + (["strategy=lora"] if override.startswith("strategy.peft") else [])
    with pytest.raises(ConfigError) as err:
        validate(composed(*overrides))
    assert key in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("train=tiny", "train.grpo: strategy=grpo needs a GRPO recipe"),
    ("train.grpo.num_generations=1", "train.grpo.num_generations"),
    ("train.grpo.max_completion_length=0", "train.grpo.max_completion_length"),
    ("train.grpo.temperature=0", "train.grpo.temperature"),
    ("train.grpo.kl_coef=-1", "train.grpo.kl_coef"),
    ("train.grpo.zero_variance_warning=2", "train.grpo.zero_variance_warning"),
    ("train.grpo.use_vllm=maybe", "train.grpo.use_vllm"),
    ("train.grpo.vllm_mode=remote", "train.grpo.vllm_mode"),
    ("train.grpo.vllm_gpu_memory_utilization=0", "train.grpo.vllm_gpu_memory_utilization"),
    ("train.grpo.protocol=pissa", "train.grpo.protocol"),
    ("train.grpo.protocol=verl", "train.grpo.protocol=verl: verl's prompts"),
])
def test_bad_grpo_recipes_fail_at_compose_time(override, key):
    """The GRPO recipe is checked with the run config (before torch loads, every sweep job
    before the first starts), not only when its trainer starts."""
    validate(composed("strategy=grpo", "train=grpo_tiny"))
    with pytest.raises(ConfigError) as err:
        validate(composed("strategy=grpo", "train=grpo_tiny", override))
    assert key in str(err.value)


@pytest.mark.parametrize("generations, refused", [(5, False), (8, False), (3, True), (7, True)])
def test_a_grpo_global_batch_of_partial_prompt_groups_is_refused_at_compose_time(generations, refused):
    """train=grpo_paper's global batch counts completions (2560): a num_generations it does not
    divide leaves a prompt group split over steps; found at compose time (a sweep over
    num_generations trains nothing), not when the first GRPO trainer of the sweep starts."""
    overrides = ("model=qwen25_3b_instruct", "data=gsm8k_train", "strategy=grpo", "train=grpo_paper",
                 f"train.grpo.num_generations={generations}")
    if refused:
        with pytest.raises(ConfigError, match=f"train.global_batch_size=2560 completions per step is not a multiple of "
                                              f"train.grpo.num_generations={generations}"):
            validate(composed(*overrides))
    else:
        validate(composed(*overrides))


@pytest.mark.parametrize("limit", [0, -5, "abc"])
def test_a_data_limit_that_keeps_no_record_is_refused_as_the_config_value(limit):
    """data.limit<=0 read as 'an empty data file', naming the shipped file; it is the limit."""
    with pytest.raises(ConfigError, match="data.limit"):
        validate(composed("data=gsm8k", f"data.limit={limit}"))


def test_the_checked_choices_are_the_libraries_own():
    """The scheduler names (checked before transformers loads) are transformers' own, and the
    model dtypes the loader's."""
    from transformers.trainer_utils import SchedulerType

    from aggc.config import LR_SCHEDULERS, MODEL_DTYPES
    from aggc.models import DTYPES

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}
    assert set(MODEL_DTYPES) == set(DTYPES)


def test_paper_semantics_cannot_use_late_zero():
    """0 means 'same as init' only in the authors' code; eq. 5 would use 0 itself."""
    validate(composed("clip.alpha_high.late=0"))  # reference: fine
    with pytest.raises(ConfigError, match="clip.alpha_high.late"):
        validate(composed("clip=aggc_paper", "clip.alpha_high.late=0"))


def test_adapter_groups_on_full_finetune_is_refused():
    with pytest.raises(ConfigError, match="clip.groups=trainable"):
        validate(composed("strategy=full_ft", "clip=aggc"))
    validate(composed("strategy=full_ft", "clip=aggc", "clip.groups=trainable"))


def test_training_cli_fails_fast_before_building_a_model(tmp_path):
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "aggc.train", "clip.beta=1.5", f"runs_root={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "clip.beta=1.5" in proc.stderr
    assert not any(tmp_path.rglob("metrics.jsonl")) and not any(tmp_path.rglob("checkpoints"))
    assert time.time() - start < 60


def test_fsdp_on_cpu_refuses_instead_of_training_ddp():
    from aggc.config import check_hardware

    cfg = composed("train.fsdp=full_shard")
    validate(cfg)
    with pytest.raises(ConfigError, match="silently train plain DDP"):
        check_hardware(cfg, cuda_available=False)
    check_hardware(cfg, cuda_available=True)
    plain = composed()
    with pytest.raises(ConfigError, match="accelerate launch asked for FSDP"):  # experiments/accelerate/fsdp2.yaml
        check_hardware(plain, cuda_available=False, environ={"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"})
    check_hardware(plain, cuda_available=False, environ={})


def test_shipped_accelerate_configs_load():
    """Every config under experiments/accelerate parses as accelerate's own config."""
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: load_config_from_file(str(p)) for p in (ROOT / "experiments" / "accelerate").glob("*.yaml")}
    assert kinds["ddp"].distributed_type == "MULTI_GPU"
    assert kinds["fsdp2"].distributed_type == "FSDP" and kinds["fsdp2"].fsdp_config["fsdp_version"] == 2


@pytest.mark.parametrize("environ, message", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP1"),
    ({"ACCELERATE_USE_FSDP": "1"}, "FSDP1"),  # accelerate's default version
    ({"ACCELERATE_USE_DEEPSPEED": "on"}, "DeepSpeed"),  # every spelling transformers' strtobool takes
    ({"ACCELERATE_USE_FSDP": "yes"}, "FSDP1"),
])
@pytest.mark.parametrize("cuda", [False, True])
def test_launches_the_clipper_cannot_serve_are_refused_with_what_to_use(environ, message, cuda):
    """DeepSpeed and FSDP1 asked for through accelerate's environment (what `accelerate
    launch --config_file` sets) refuse before anything loads, on any machine."""
    from aggc.config import check_hardware

    with pytest.raises(ConfigError, match=f"{message}.*use FSDP2"):
        check_hardware(composed(), cuda_available=cuda, environ=environ)


@pytest.mark.parametrize("override, message", [
    ("+train.fp16_full_eval=true", "(?s)train.fp16_full_eval: unknown key.*train.fp16: "),
    ("+train.max_grad_norm=1.0", "train.max_grad_norm: not supported.*clip=global"),
    ("+train.deepspeed=ds.json", "train.deepspeed: not supported.*FSDP2"),
    ("+train.grpo.num_generatons=8", "train.grpo.num_generatons: unknown key.*train.grpo.num_generations"),
    ("+train.lerning_rate=1e-4", "(?s)unknown key \\(did you mean train.learning_rate\\?\\).*train.hparams: "),
])
def test_train_keys_are_a_closed_set(override, message):
    """A train key the stage would not read is refused, naming the known keys."""
    with pytest.raises(ConfigError, match=message):
        validate(composed(override, *(["train=grpo_tiny", "strategy=grpo"] if "grpo" in override else [])))


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (ROOT / "conf" / "train").glob("*.yaml")))
def test_every_shipped_recipe_uses_known_train_keys_only(recipe):
    from aggc.config import TRAIN_KEYS, check_train_keys

    cfg = composed(f"train={recipe}", *(["data=glue_cola"] if recipe == "paper_glue" else []),
                   *(["data=metamathqa"] if recipe.startswith("paper_sft") else []))
    check_train_keys(cfg.train)
    assert set(cfg.train) <= set(TRAIN_KEYS)


def test_fp16_is_refused_on_cpu_and_exclusive_with_bf16():
    from aggc.config import check_hardware

    with pytest.raises(ConfigError, match="fp16 mixed precision needs a GPU"):
        check_hardware(composed("train.fp16=true"), cuda_available=False, environ={})
    check_hardware(composed("train.fp16=true"), cuda_available=True, environ={})
    with pytest.raises(ConfigError, match="choose one"):
        validate(composed("train.fp16=true", "train.bf16=true"))
    with pytest.raises(ConfigError, match="float32 weights"):
        validate(composed("train.fp16=true", "strategy=full_ft", "model.dtype=float16"))
    with pytest.raises(ConfigError, match="overflow steps"):
        validate(composed("train.fp16=true", "clip.nonfinite=error"))


@pytest.mark.parametrize("value", [2.5, -0.1, 1.0, "high"])
def test_model_dropout_is_a_probability(value):
    with pytest.raises(ConfigError, match="model.dropout"):
        validate(composed("model=tiny_deberta", "data=glue_cola", f"model.dropout={value}"))


# --- the global batch and the precision of the paper's recipes ------------------------------

@pytest.mark.parametrize("data, global_batch", [("metamathqa", 32), ("codefeedback", 128), ("wizardlm", 64)])
@pytest.mark.parametrize("processes", [1, 2, 4, 8])
def test_accumulation_is_computed_from_the_training_sets_global_batch(data, global_batch, processes):
    """train=paper_sft trains Table 7's global batch of each training set on any number of
    processes: the accumulation is what makes processes x per-device batch x it equal it."""
    from aggc.config import check_hardware, effective_batch

    cfg = composed("model=mistral_7b", f"data={data}", "strategy=aggc", "train=paper_sft")
    validate(cfg)
    check_hardware(cfg, cuda_available=True, environ={"WORLD_SIZE": str(processes)})
    batch = effective_batch(cfg.train, processes)
    assert batch["global_batch_size"] == global_batch
    assert batch["world_size"] * batch["per_device_train_batch_size"] * batch["gradient_accumulation_steps"] == global_batch


@pytest.mark.parametrize("recipe", ["paper_sft", "paper_sft_bf16"])
def test_a_per_dataset_recipe_on_another_training_set_asks_for_its_global_batch(recipe):
    """train=paper_sft on a training set outside Table 7 failed with an interpolation error
    ('train.hparams.arith.global_batch_size' not found); it names the fix. Given outright,
    the batch is that set's."""
    with pytest.raises(ConfigError, match=r"train.global_batch_size: .*train.hparams.arith.global_batch_size.* not found; it has metamathqa, codefeedback, wizardlm\); pass train.global_batch_size=<value>"):
        validate(composed("model=tiny_llama", "data=arith", "strategy=lora", f"train={recipe}"))
    validate(composed("model=tiny_llama", "data=arith", "strategy=lora", f"train={recipe}", "train.global_batch_size=8"))


def test_a_glue_recipe_without_a_row_for_the_strategy_names_the_missing_entry():
    """train=paper_glue reads Table 6's row of (task, strategy): a strategy without one names
    the setting and the entry, not only an interpolation error (the check above, for any recipe)."""
    with pytest.raises(ConfigError, match=r"train.learning_rate: .*'train.hparams.cola.grpo.lr' not found; it has mnli, "):
        validate(composed("model=tiny_deberta", "data=glue_cola", "strategy=grpo", "train=paper_glue"))


@pytest.mark.parametrize("recipe", ["paper_sft", "paper_glue"])
@pytest.mark.parametrize("value", ["${data.nonexistent}", "${oc.env:AGGC_UNSET_VARIABLE_FOR_TEST}"])
def test_a_recipe_with_hparams_reports_another_unresolvable_train_value_as_a_config_error(recipe, value):
    """The hparams check re-raised any other interpolation failure in train raw (an OmegaConf
    error, not a ConfigError): the compose-time callback, which catches ConfigError, let it
    through as a Hydra warning and the job trained on. It is validate's 'does not resolve'."""
    data = "data=glue_cola" if recipe == "paper_glue" else "data=metamathqa"
    model = "model=tiny_deberta" if recipe == "paper_glue" else "model=tiny_llama"
    with pytest.raises(ConfigError, match=r"(?s)config does not resolve: .*full_key: train.learning_rate"):
        validate(composed(model, data, "strategy=lora", f"train={recipe}", f"train.learning_rate={value}"))


def test_a_global_batch_the_launch_cannot_divide_is_refused_before_training():
    from aggc.config import check_hardware

    cfg = composed("model=mistral_7b", "data=metamathqa", "strategy=aggc", "train=paper_sft")
    with pytest.raises(ConfigError, match=r"train.global_batch_size=32 is not a multiple of 3 process\(es\) x "
                                          r"train.per_device_train_batch_size=2"):
        check_hardware(cfg, cuda_available=True, environ={"WORLD_SIZE": "3"})
    with pytest.raises(ConfigError, match="train.global_batch_size=30 is not a multiple"):
        validate(composed("model=mistral_7b", "data=metamathqa", "strategy=aggc", "train=paper_sft",
                          "train.global_batch_size=30", "train.per_device_train_batch_size=4"))
    with pytest.raises(ConfigError, match="set one of them"):
        validate(composed("model=mistral_7b", "data=metamathqa", "strategy=aggc", "train=paper_sft",
                          "train.gradient_accumulation_steps=2"))


@pytest.mark.parametrize("recipe", ["paper_sft", "paper_sft_bf16"])
@pytest.mark.parametrize("strategy", ["full_ft", "bitfit", "lora", "aggc"])
def test_weights_that_train_are_float32_under_every_recipe(recipe, strategy):
    """The paper's precision (float32 weights, no autocast) and the scripts' (bf16 autocast, a
    frozen bfloat16 base under adapters): Full FT and BitFit load float32 either way (fp32
    master weights), and pure-bf16 training of the model's own weights is refused."""
    cfg = composed("model=llama2_7b", "data=metamathqa", f"strategy={strategy}", f"train={recipe}")
    validate(cfg)
    trains_base = strategy in ("full_ft", "bitfit")
    assert cfg.model.dtype == ("bfloat16" if recipe == "paper_sft_bf16" and not trains_base else "float32")
    assert cfg.train.bf16 == (recipe == "paper_sft_bf16")
    if trains_base:
        with pytest.raises(ConfigError, match="no float32 master weights"):
            validate(composed("model=llama2_7b", "data=metamathqa", f"strategy={strategy}", f"train={recipe}",
                              "model.dtype=bfloat16"))
