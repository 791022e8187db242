"""Supervised fine-tuning (Full FT, LoRA, DoRA, AGGC) with the HF Trainer.

One run = one run directory (see `rundir`). Order of work: validate the config, read the
data, then build the model, so that bad input fails before anything expensive.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

from ..config import ConfigError, check_hardware, validate
from ..data.formats import load_sft_records
from ..data.sft import tokenize_for_sft
from ..models import load_model_and_tokenizer
from . import rundir
from .callback import ClipCallback

log = logging.getLogger(__name__)


def apply_strategy(model, strategy: DictConfig):
    """Wrap the model for the strategy: peft LoRA / DoRA adapters, or train everything."""
    peft_cfg = strategy.peft
    if peft_cfg.method == "none":
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=peft_cfg.r,
        lora_alpha=peft_cfg.alpha,
        lora_dropout=peft_cfg.dropout,
        target_modules=list(peft_cfg.target_modules),
        use_dora=peft_cfg.method == "dora",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def training_arguments(cfg: DictConfig, output_dir: Path) -> TrainingArguments:
    t = cfg.train
    full_ft = cfg.strategy.peft.method == "none"
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=t.full_ft_learning_rate if full_ft else t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # transformers 5: a value < 1 is a fraction of the steps
        weight_decay=t.weight_decay,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        bf16=bool(t.bf16) and torch.cuda.is_available(),
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        dataloader_num_workers=t.dataloader_num_workers,
        activation_checkpointing=t.activation_checkpointing,
        # FSDP2, full shard (the choice for Full FT of 7B models); the clipper all-reduces
        # the squared norms of the DTensor gradient shards (tests/clipping/test_distributed.py).
        fsdp="full_shard auto_wrap" if t.fsdp else "",
        fsdp_config={"version": 2, "reshard_after_forward": True} if t.fsdp else None,
        deepspeed=t.deepspeed,
        # The clipper does all clipping (its `global` mode is clip_grad_norm_'s math);
        # the Trainer's own clipping stays off so nothing is clipped twice.
        max_grad_norm=0.0,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[] if cfg.wandb.mode == "disabled" else ["wandb"],
        run_name=output_dir.parent.name,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        save_only_model=False,
    )


def setup_wandb(cfg: DictConfig, run_dir: Path) -> None:
    """wandb through the Trainer's integration; offline unless configured. The run id is
    derived from the run directory so a resumed run continues the same wandb run."""
    if cfg.wandb.mode == "disabled":
        return
    os.environ["WANDB_MODE"] = cfg.wandb.mode
    os.environ["WANDB_DIR"] = str(run_dir)
    os.environ["WANDB_PROJECT"] = cfg.wandb.project
    if cfg.wandb.entity:
        os.environ["WANDB_ENTITY"] = cfg.wandb.entity
    os.environ["WANDB_RUN_ID"] = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
    os.environ["WANDB_RESUME"] = "allow"


def run(cfg: DictConfig, run_dir: Path) -> Path:
    """Train one cell into `run_dir`; resume from its last whole checkpoint if any."""
    clip = validate(cfg)
    check_hardware(cfg, torch.cuda.is_available())
    if cfg.model.task != "causal_lm":
        raise ConfigError(f"model.task={cfg.model.task!r}: the SFT stage trains causal LMs (GLUE models use the GLUE stage)")
    run_dir = Path(run_dir)
    if rundir.is_completed(run_dir):
        log.info("%s is COMPLETED; nothing to do", run_dir)
        return run_dir
    records = load_sft_records(OmegaConf.to_container(cfg.data, resolve=True), "train")

    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = run_dir / "checkpoints"
    resume = rundir.last_checkpoint(checkpoints)
    # Under torchrun every rank runs this function; only rank 0 writes the run's files.
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        rundir.write_config(run_dir, cfg)
        if resume is None or not (run_dir / "manifest.json").exists():
            rundir.write_manifest(run_dir, cfg.seed, clip_mode=clip.mode, world_size=int(os.environ.get("WORLD_SIZE", "1")), resumed_from=[])
        if resume is not None:
            log.info("resuming from %s", resume)
            resumed = rundir.read_json(run_dir / "manifest.json")["resumed_from"]
            rundir.update_manifest(run_dir, resumed_from=resumed + [resume.name])
    setup_wandb(cfg, run_dir)

    set_seed(cfg.seed)
    started = time.time()
    model, tokenizer = load_model_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir))
    if not cfg.strategy.get("trains", True):  # strategy=base: the untrained model is the result
        if main_process:
            save_final(model, tokenizer, run_dir / "final")
            rundir.mark_completed(run_dir, {"global_step": 0})
        return run_dir
    model = apply_strategy(model, cfg.strategy)
    dataset = tokenize_for_sft(records, tokenizer, cfg.data.max_length, cfg.model.chat_template)

    resume_step = None if resume is None else rundir.checkpoint_step(resume)
    metrics = rundir.MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step) if main_process else None
    callback = ClipCallback(clip, metrics, resume_from=resume)
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, checkpoints),
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        if metrics is not None:
            metrics.close()
    if trainer.is_world_process_zero():
        save_final(trainer.model, tokenizer, run_dir / "final")
        rundir.update_manifest(run_dir, **peak_memory(), train_seconds=round(time.time() - started, 2), skipped_steps=callback.skipped_steps)
        rundir.mark_completed(run_dir, {"global_step": trainer.state.global_step, "train_loss": result.training_loss})
    return run_dir


def save_final(model, tokenizer, path: Path) -> None:
    """Save the final model; adapters are merged into the base weights (the paper merges)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def peak_memory() -> dict:
    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        peak["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak
