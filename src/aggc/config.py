"""Check a composed run config before anything expensive happens.

Every error names the public key (`clip.beta`, `train.learning_rate`, ...), so a typo in a
sweep fails in a second, not after a model has been loaded.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from .clipping.config import ClipConfig, ClipConfigError

PEFT_METHODS = ("none", "lora", "dora", "bitfit")
MODEL_KINDS = ("tiny", "gguf", "hub")
DATA_KINDS = ("arith", "jsonl", "hub", "tsv")   # tsv: GLUE task files
MODEL_DTYPES = ("float32", "bfloat16")   # model.dtype: the torch dtype the models load in (aggc.models.DTYPES)
# transformers' SchedulerType values, named here so the check runs before transformers loads
# (tests/test_config.py checks they are transformers' own).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")
SELECT_BEST = ("last", "epoch")   # GLUE: score the final epoch, or keep the best dev-set epoch


# The train recipe's keys (conf/train/*.yaml), each read by the training stage: a key not
# here would be silently dropped, so it is refused.
TRAIN_KEYS = {
    "learning_rate": "peak learning rate of adapter strategies (LoRA, DoRA, AGGC, BitFit)",
    "full_ft_learning_rate": "peak learning rate of Full FT and GRPO's full-model strategies",
    "lr_scheduler_type": "HF scheduler name (cosine, linear, constant)",
    "warmup_ratio": "warm-up as a fraction of the steps, in [0, 1)",
    "weight_decay": "AdamW weight decay",
    "num_train_epochs": "epochs, when max_steps is -1",
    "max_steps": "optimizer steps, or -1 to use num_train_epochs",
    "per_device_train_batch_size": "sequences per process per micro-batch",
    "global_batch_size": "sequences per optimizer step over all processes (the paper's batch size, Table 7); the "
                         "accumulation is computed at launch from it, the world size and the per-device batch. "
                         "null: gradient_accumulation_steps as given",
    "gradient_accumulation_steps": "micro-batches per optimizer step; null when global_batch_size is set",
    "bf16": "bf16 autocast on GPUs (ignored on CPU)",
    "frozen_dtype": "dtype of weights that do not train (the base under LoRA/DoRA/AGGC), read by the hub models' "
                    "model.dtype: unset = float32 (paper section 4), bfloat16 (the authors' scripts, train=paper_sft_bf16)",
    "fp16": "fp16 autocast with a GradScaler on GPUs (refused on CPU)",
    "logging_steps": "Trainer log interval",
    "save_steps": "checkpoint interval (steps)",
    "save_total_limit": "checkpoints kept",
    "select_best": "GLUE: last, or epoch (keep the best dev-set epoch)",
    "dataloader_num_workers": "data loader worker processes",
    "activation_checkpointing": "recompute activations in backward",
    "fsdp": "null (DDP) or full_shard (FSDP2, GPUs)",
    "grpo": "GRPO recipe (train=grpo_tiny, grpo_paper)",
    "lora_alpha": "LoRA alpha of the recipe (train=paper_glue), read by strategy.peft.alpha",
    "hparams": "per task and strategy table the recipe's values are looked up in (train=paper_glue)",
}
GRPO_KEYS = ("protocol", "num_generations", "max_completion_length", "temperature", "kl_coef", "use_vllm", "vllm_mode",
             "vllm_gpu_memory_utilization", "zero_variance_warning")
GRPO_PROTOCOLS = ("alpaca", "verl")   # train.grpo.protocol: prompt and reward rule (aggc.train.grpo.ANSWER_RULES)
# Keys users reach for that the harness does on purpose another way.
REFUSED_TRAIN_KEYS = {
    "max_grad_norm": "the clipper does all clipping (the Trainer's is off so nothing is clipped twice): use clip=global clip.max_norm=...",
    "deepspeed": "DeepSpeed ZeRO frees or moves p.grad before the clipper's hook, so nothing would be clipped or logged: "
                 "use FSDP2 (train.fsdp=full_shard)",
}


class ConfigError(ValueError, CompactHydraException):
    """A run config value is invalid; the message names the key. Hydra prints it without a
    traceback (HYDRA_FULL_ERROR=1 shows one)."""


# Replay recomputes factors from per-group norms; AdaGC's are per tensor (aggc-replay and replay()).
ADAGC_NOT_REPLAYABLE = "clip.mode=adagc clips each tensor on its own: per-group norms cannot replay it"


def clip_config(cfg: DictConfig) -> ClipConfig:
    """`cfg.clip` as a validated `ClipConfig` (the `name` key is the preset's label)."""
    values = OmegaConf.to_container(cfg.clip, resolve=True)
    values.pop("name", None)
    return ClipConfig.from_dict(values)


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    """True as accelerate and transformers read a flag (their strtobool)."""
    return environ.get(name, "").strip().lower() in ("1", "y", "yes", "t", "true", "on")


def check_launch(environ: Mapping[str, str] = os.environ) -> None:
    """Launches in which the clipper cannot see the full reduced gradient refuse to start,
    before anything is loaded: DeepSpeed and FSDP1, as `accelerate launch` asks for them
    (its config file becomes ACCELERATE_USE_DEEPSPEED / ACCELERATE_USE_FSDP + FSDP_VERSION).
    The callback checks again at train begin on what the run really is."""
    advice = "use FSDP2 (train.fsdp=full_shard, or experiments/accelerate/fsdp2.yaml) or DDP (experiments/accelerate/ddp.yaml)"
    if _env_flag(environ, "ACCELERATE_USE_DEEPSPEED"):
        raise ConfigError(f"accelerate launch asked for DeepSpeed (ACCELERATE_USE_DEEPSPEED): ZeRO frees or moves p.grad "
                          f"before the clipper's hook, so nothing would be clipped or logged; {advice}")
    if _env_flag(environ, "ACCELERATE_USE_FSDP") and environ.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(f"accelerate launch asked for FSDP{environ.get('FSDP_VERSION', '1')} (FSDP_VERSION): its flat "
                          f"shards would make every rank clip by its own shard's norm; {advice}")


def check_hardware(cfg: DictConfig, cuda_available: bool, environ: Mapping[str, str] = os.environ) -> None:
    """Settings that cannot take effect on this launch or machine refuse to start, never fall
    back. FSDP is asked for by `train.fsdp` or by `accelerate launch` with an FSDP config
    (which sets ACCELERATE_USE_FSDP)."""
    check_launch(environ)
    effective_batch(cfg.train, world_size(environ))  # the global batch divides over this launch's processes
    if cfg.train.fp16 and not cuda_available:
        raise ConfigError("train.fp16=true: fp16 mixed precision needs a GPU (its GradScaler); on CPU the run would "
                          "silently train in fp32. Set train.fp16=false")
    if cuda_available:
        return
    if cfg.train.fsdp:
        raise ConfigError(
            f"train.fsdp={cfg.train.fsdp}: accelerate enables FSDP only on GPU backends; on CPU the run would "
            "silently train plain DDP. Run on GPUs, or set train.fsdp=null"
        )
    if _env_flag(environ, "ACCELERATE_USE_FSDP"):
        raise ConfigError(
            "accelerate launch asked for FSDP (ACCELERATE_USE_FSDP), but there is no GPU: accelerate would silently "
            "train plain DDP. Run on GPUs, or launch with experiments/accelerate/ddp.yaml"
        )


def check_recipe_covers_data(cfg: DictConfig) -> None:
    """A recipe whose settings are per training set (train.hparams: train=paper_sft's Table 7
    batches, train=paper_glue's Table 6 rows) must have an entry for this one, unless the
    settings it reads from there are given outright."""
    from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

    hparams = cfg.get("train", {}).get("hparams")
    if hparams is None:
        return
    try:
        OmegaConf.to_container(cfg.train, resolve=True)
    except OmegaConfBaseException as err:
        missing = str(err).splitlines()[0]
        if not isinstance(err, InterpolationKeyError) or "'train.hparams." not in missing:
            return  # another value that does not resolve: validate reports it as a ConfigError
        raise ConfigError(f"{err.full_key}: this train recipe reads it from train.hparams, which has no entry for "
                          f"this run ({missing}; it has {', '.join(hparams)}); pass {err.full_key}=<value>") from None


def validate(cfg: DictConfig) -> ClipConfig:
    """Validate the whole run config; returns the clip config it implies."""
    check_recipe_covers_data(cfg)
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # an interpolation or a ??? value
        raise ConfigError(f"config does not resolve: {err}") from err
    try:
        clip = clip_config(cfg)
    except ClipConfigError as err:
        raise ConfigError(str(err)) from err

    _choice("model.kind", cfg.model.kind, MODEL_KINDS)
    _choice("data.kind", cfg.data.kind, DATA_KINDS)
    method = cfg.strategy.peft.method
    _choice("strategy.peft.method", method, PEFT_METHODS)
    if method in ("none", "bitfit") and clip.groups == "lora" and clip.mode in ("aggc", "adagc", "none"):
        what = "a full fine-tune" if method == "none" else "BitFit"
        raise ConfigError(
            f"clip.groups=lora with strategy={cfg.strategy.name}: {what} has no LoRA tensors; set clip.groups=trainable"
        )
    if method in ("lora", "dora"):
        require_positive_int("strategy.peft.r", cfg.strategy.peft.r)
        require_positive("strategy.peft.alpha", cfg.strategy.peft.alpha)
        dropout = cfg.strategy.peft.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"strategy.peft.dropout={cfg.strategy.peft.dropout}: must lie in [0, 1)")

    t = cfg.train
    check_train_keys(t)
    check_train_values(t)
    require_positive("train.learning_rate", t.learning_rate)
    require_positive("train.full_ft_learning_rate", t.full_ft_learning_rate)
    require_positive_int("train.per_device_train_batch_size", t.per_device_train_batch_size)
    effective_batch(t, world_size=1)  # whatever the launch: the global batch is whole per-device batches
    require_positive_int("train.save_steps", t.save_steps)
    if t.max_steps == 0 or t.max_steps < -1:
        raise ConfigError(f"train.max_steps={t.max_steps}: -1 (use num_train_epochs) or a positive step count")
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio={t.warmup_ratio}: must lie in [0, 1)")
    if t.fsdp not in (None, "full_shard"):
        raise ConfigError(f"train.fsdp={t.fsdp!r}: must be null or full_shard")
    select_best = t.get("select_best", "last")
    _choice("train.select_best", select_best, SELECT_BEST)
    if select_best == "epoch" and cfg.model.get("task") != "seq_cls":
        raise ConfigError(f"train.select_best=epoch with model={cfg.model.name}: only GLUE runs (model.task=seq_cls) "
                          "score a dev set during training; the generation benchmarks are scored by the evaluation stage")
    if select_best == "epoch" and t.max_steps != -1:
        raise ConfigError(f"train.select_best=epoch with train.max_steps={t.max_steps}: the best of whole epochs is kept, "
                          "so the run's length is train.num_train_epochs; set train.max_steps=-1")
    if t.bf16 and t.fp16:
        raise ConfigError("train.bf16=true and train.fp16=true: choose one mixed precision")
    if t.fp16 and cfg.model.get("dtype", "float32") != "float32":
        raise ConfigError(f"train.fp16=true with model.dtype={cfg.model.dtype}: fp16 autocasts over float32 weights "
                          "(the GradScaler cannot unscale fp16 gradients); set model.dtype=float32")
    if t.fp16 and clip.nonfinite != "skip":
        raise ConfigError(f"train.fp16=true with clip.nonfinite={clip.nonfinite}: the GradScaler's overflow steps (Inf "
                          "gradients, skipped by the scaler itself) reach the clipper as non-finite steps; only "
                          "clip.nonfinite=skip agrees with the scaler, and they count toward clip.max_consecutive_skips")
    dtype = cfg.model.get("dtype", "float32")
    if method in ("none", "bitfit") and cfg.strategy.get("trains", True) and dtype != "float32":
        raise ConfigError(f"model.dtype={dtype} with strategy={cfg.strategy.name}: the model's own weights train, and "
                          f"AdamW updates of {dtype} weights mostly round away (pure-{dtype} training, no float32 master "
                          "weights); set model.dtype=float32 (train.bf16=true autocasts the computation)")
    dropout = cfg.model.get("dropout")
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1):
        raise ConfigError(f"model.dropout={dropout!r}: a probability in [0, 1), or null for the checkpoint's own")
    require_positive_int("data.max_length", cfg.data.max_length)
    if cfg.data.get("limit") is not None:
        require_positive_int("data.limit", cfg.data.limit)
    for key in ("train_size", "eval_size"):   # the generated arith data
        if key in cfg.data:
            require_positive_int(f"data.{key}", cfg.data[key])
    if cfg.model.get("dtype") is not None:
        _choice("model.dtype", cfg.model.dtype, MODEL_DTYPES)
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r}: must be an integer in [0, 2**32) (numpy's and torch's seed range)")
    if cfg.strategy.get("trainer", "sft") == "grpo":
        check_grpo_recipe(cfg)
    if cfg.wandb.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"wandb.mode={cfg.wandb.mode!r}: must be offline, online or disabled")
    return clip


def world_size(environ: Mapping[str, str] = os.environ) -> int:
    """The number of training processes of this launch (torchrun's WORLD_SIZE; 1 without it)."""
    return int(environ.get("WORLD_SIZE", "1"))


def effective_batch(train: DictConfig, world_size: int) -> dict:
    """The optimizer step's batch as a launch of `world_size` processes trains it.

    With `train.global_batch_size` (the paper's batch, e.g. Table 7's 32 / 128 / 64) the
    accumulation is computed here: global / (world size x per-device batch), refused when it
    does not divide (the run would train another batch than its config says). Without it,
    `train.gradient_accumulation_steps` as given, and the global batch follows from the
    launch. The result is what the run's manifest records (`batch`)."""
    per_device = train.per_device_train_batch_size
    global_batch = train.get("global_batch_size")
    accumulation = train.get("gradient_accumulation_steps")
    if global_batch is None:
        require_positive_int("train.gradient_accumulation_steps", accumulation)
        global_batch = world_size * per_device * accumulation
    else:
        require_positive_int("train.global_batch_size", global_batch)
        if accumulation is not None:
            raise ConfigError(f"train.global_batch_size={global_batch} and train.gradient_accumulation_steps={accumulation}: "
                              "the accumulation is computed from the global batch at launch; set one of them "
                              "(train.gradient_accumulation_steps=null, or train.global_batch_size=null)")
        per_step = world_size * per_device
        if global_batch % per_step:
            raise ConfigError(
                f"train.global_batch_size={global_batch} is not a multiple of {world_size} process(es) x "
                f"train.per_device_train_batch_size={per_device} = {per_step}: no whole number of accumulation steps "
                f"trains it. Change train.per_device_train_batch_size or the number of processes")
        accumulation = global_batch // per_step
    return {"global_batch_size": global_batch, "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": accumulation, "world_size": world_size}


def check_train_keys(train: DictConfig) -> None:
    """`train.*` is a closed set: a key the training stage does not read is refused."""
    for key in train:
        if key in REFUSED_TRAIN_KEYS:
            raise ConfigError(f"train.{key}: not supported: {REFUSED_TRAIN_KEYS[key]}")
        if key == "grpo" and train.grpo is not None:
            unknown = sorted(set(train.grpo) - set(GRPO_KEYS))
            if unknown:
                raise ConfigError(f"train.grpo.{unknown[0]}: unknown key; the GRPO recipe's keys are: "
                                  + ", ".join(f"train.grpo.{k}" for k in GRPO_KEYS))
        if key not in TRAIN_KEYS:
            close = difflib.get_close_matches(str(key), TRAIN_KEYS, n=1)
            hint = f" (did you mean train.{close[0]}?)" if close else ""
            known = "\n".join(f"  train.{k}: {what}" for k, what in TRAIN_KEYS.items())
            raise ConfigError(f"train.{key}: unknown key{hint}; the train recipe's keys are:\n{known}")


def check_grpo_recipe(cfg: DictConfig) -> None:
    """The GRPO recipe's values (`train.grpo`) at compose time, so a GRPO sweep with one bad
    value trains nothing; what depends on the launch (the batch per process count, vLLM's GPU)
    is checked again at train start (aggc.train.grpo.check_grpo)."""
    if cfg.model.get("task", "causal_lm") != "causal_lm":
        raise ConfigError(f"model.task={cfg.model.task!r}: GRPO trains causal LMs")
    g = cfg.train.get("grpo")
    if g is None:
        raise ConfigError(f"train.grpo: strategy={cfg.strategy.name} needs a GRPO recipe: "
                          "train=grpo_tiny (CPU) or train=grpo_paper")
    require_positive_int("train.grpo.num_generations", g.num_generations)
    if g.num_generations < 2:
        raise ConfigError(f"train.grpo.num_generations={g.num_generations}: GRPO compares completions of one prompt; "
                          "must be >= 2")
    global_batch = cfg.train.get("global_batch_size")
    if isinstance(global_batch, int) and not isinstance(global_batch, bool) and global_batch % g.num_generations:
        raise ConfigError(f"train.global_batch_size={global_batch} completions per step is not a multiple of "
                          f"train.grpo.num_generations={g.num_generations} (whole prompt groups): set "
                          f"train.global_batch_size=<prompts x {g.num_generations}>")
    require_positive_int("train.grpo.max_completion_length", g.max_completion_length)
    require_positive("train.grpo.temperature", g.temperature)
    for key, high in (("kl_coef", math.inf), ("zero_variance_warning", 1)):
        value = g[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
            raise ConfigError(f"train.grpo.{key}={value!r}: must be a number >= 0"
                              + (" and <= 1 (a fraction of prompt groups)" if high == 1 else ""))
    if not isinstance(g.use_vllm, bool):
        raise ConfigError(f"train.grpo.use_vllm={g.use_vllm!r}: must be true or false")
    _choice("train.grpo.vllm_mode", g.vllm_mode, ("colocate", "server"))
    memory = g.vllm_gpu_memory_utilization
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or not 0 < memory <= 1:
        raise ConfigError(f"train.grpo.vllm_gpu_memory_utilization={memory!r}: a fraction of GPU memory in (0, 1]")
    if g.protocol not in GRPO_PROTOCOLS:
        raise ConfigError(f"train.grpo.protocol={g.protocol!r}: one of {', '.join(GRPO_PROTOCOLS)}")
    if g.protocol == "verl" and not cfg.model.get("chat_template"):
        raise ConfigError("train.grpo.protocol=verl: verl's prompts are the user turn of a chat; "
                          "set model.chat_template=true (an instruct model), or train.grpo.protocol=alpaca")


def check_train_values(train: DictConfig) -> None:
    """Each train.* value the Trainer reads has its type and range here, so a nonsensical one
    (a negative weight decay, logging_steps=0, an unknown scheduler) fails at compose time, not
    after the model is built."""
    _choice("train.lr_scheduler_type", train.lr_scheduler_type, LR_SCHEDULERS)
    for key in ("warmup_ratio", "weight_decay"):
        value = train[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"train.{key}={value!r}: must be a number >= 0")
    require_positive("train.num_train_epochs", train.num_train_epochs)
    if isinstance(train.max_steps, bool) or not isinstance(train.max_steps, int):
        raise ConfigError(f"train.max_steps={train.max_steps!r}: -1 (use num_train_epochs) or a positive step count")
    require_positive_int("train.logging_steps", train.logging_steps)
    if train.save_total_limit is not None:
        require_positive_int("train.save_total_limit", train.save_total_limit)
    workers = train.dataloader_num_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"train.dataloader_num_workers={workers!r}: must be an integer >= 0")
    for key in ("bf16", "fp16", "activation_checkpointing"):
        if not isinstance(train[key], bool):
            raise ConfigError(f"train.{key}={train[key]!r}: must be true or false")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(allowed)}")


def require_positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive number")


def require_positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive integer")
