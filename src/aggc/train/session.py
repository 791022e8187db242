"""What every trainer of the training stage shares (SFT, GRPO, GLUE): the run directory's
life cycle around one HF-Trainer-family `train()` call.

`open_run` writes config and manifest, finds the checkpoint to resume from and builds the
clip callback; `finish_run` saves the final model, records peak memory and marks the run
COMPLETED (written last, so a crash never leaves a run that looks done).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..clipping import ClipConfig
from ..config import ConfigError, effective_batch
from . import rundir
from .callback import ClipCallback
from .console import quiet_loading, summary, use_one_progress_bar
from .wandb_log import WandbLog

log = logging.getLogger(__name__)


class HarnessTrainer:
    """Mixin for every trainer class of the stage (HF Trainer, TRL's GRPOTrainer): two
    places where transformers 5.23 would hand the run something else than it asked for.

    - Its `grad_norm` log goes through `clip_grad_norm_(params, inf)` right before
      `on_pre_optimizer_step`: with one non-finite gradient the factor inf / NaN is NaN and
      every gradient turns NaN before the clipper's non-finite policy can act. The pass is
      skipped; `grad_norm` in metrics.jsonl is the clipper's own pre-clip total.
    - Resumed from a checkpoint at the last step (a crash after it, before COMPLETED), it
      trains one step past `max_steps`. An epoch with no step left is not entered.
    """

    def _get_grad_norm(self, model, grad_norm=None):
        return grad_norm  # None: the Trainer's own clipping is off (max_grad_norm=0)

    def _run_epoch(self, *args, **kwargs):
        if self.state.global_step >= self.state.max_steps > 0:
            return None
        return super()._run_epoch(*args, **kwargs)


@dataclass
class RunSession:
    run_dir: Path
    checkpoints: Path
    resume: Path | None  # the whole checkpoint to resume from, if any
    main_process: bool  # rank 0 under torchrun: the only writer of the run's files
    callback: ClipCallback
    metrics: rundir.MetricsLog | None
    started: float = field(default_factory=time.time)
    wandb: WandbLog | None = None

    def train(self, trainer):
        """`trainer.train()`, resumed when a checkpoint exists; the metrics log is closed even on a crash."""
        use_one_progress_bar(trainer)
        try:
            return trainer.train(resume_from_checkpoint=str(self.resume) if self.resume else None)
        finally:
            self.close()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None


@contextlib.contextmanager
def claimed(cfg: DictConfig, run_dir: Path):
    """Hold the run for one process (rank 0 takes the run's lock; a second start of the
    same run waits for it, then finds it COMPLETED), and refuse a run directory that holds
    another configuration. A COMPLETED run is only read."""
    run_dir = Path(run_dir)
    rundir.check_same_run(run_dir, cfg)  # first: a refused command writes nothing into the run
    if rundir.is_completed(run_dir):  # done (COMPLETED is written last, by the lock's holder): read only
        yield run_dir
        return
    if int(os.environ.get("RANK", "0")) > 0:  # the other ranks of a distributed job follow their rank 0
        rundir.wait_for_rank_zero(run_dir)
        yield run_dir
        return
    lock = rundir.acquire(run_dir)
    try:
        rundir.check_same_run(run_dir, cfg)  # again, as the lock's holder
        yield run_dir
    finally:
        rundir.release(lock, run_dir)


def open_run(cfg: DictConfig, run_dir: Path, clip: ClipConfig) -> RunSession:
    quiet_loading()
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = run_dir / "checkpoints"
    resume = rundir.last_checkpoint(checkpoints)
    main_process = int(os.environ.get("RANK", "0")) == 0
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if resume is not None and (run_dir / "manifest.json").exists():
        trained_with = rundir.read_json(run_dir / "manifest.json").get("world_size", world_size)
        if trained_with != world_size:
            why = ("its global batch (train.global_batch_size) would stay, but the checkpoint holds each process's "
                   "state (RNG states, FSDP shards) for that many" if cfg.train.get("global_batch_size") is not None else
                   "the global batch, so the run, would change midway")
            raise ConfigError(f"{run_dir} was trained by {trained_with} process(es) and would resume with {world_size}: "
                              f"{why}. Resume it with {trained_with} process(es)")
    if main_process:
        rundir.write_config(run_dir, cfg)
        if resume is None or not (run_dir / "manifest.json").exists():
            rundir.write_manifest(run_dir, cfg, clip_mode=clip.mode, world_size=world_size, resumed_from=[],
                                  batch=effective_batch(cfg.train, world_size))
        else:
            log.info("resuming from %s", resume)
            rundir.record_start(run_dir, resume.name)
    resume_step = None if resume is None else rundir.checkpoint_step(resume)
    metrics = rundir.MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step) if main_process else None
    wandb_log = None
    if main_process and cfg.wandb.mode != "disabled":
        wandb_log = WandbLog(cfg, run_dir, rundir.read_metrics(run_dir / "metrics.jsonl") if resume_step else [])
    started = time.time()
    callback = ClipCallback(clip, metrics, resume_from=resume, run_dir=run_dir if main_process else None, started=started,
                            wandb_log=wandb_log)
    return RunSession(run_dir, checkpoints, resume, main_process, callback, metrics, started, wandb_log)


def finish_run(session: RunSession, trainer, tokenizer) -> None:
    """The final model, then the totals over every process that trained the run (its time,
    the mean loss of all its steps, not only this process's), then COMPLETED."""
    if not trainer.is_world_process_zero():
        return
    save_final(trainer.model, tokenizer, session.run_dir / "final")
    rundir.record_progress(session.run_dir, time.time() - session.started)
    starts = rundir.read_json(session.run_dir / "manifest.json")["starts"]
    seconds = round(sum(s["seconds"] for s in starts), 2)
    rundir.update_manifest(session.run_dir, **rundir.run_peak_memory(starts), skipped_steps=session.callback.skipped_steps,
                           train_seconds=seconds)
    records = rundir.read_metrics(session.run_dir / "metrics.jsonl")
    loss = rundir.train_loss(records)
    rundir.mark_completed(session.run_dir, {"global_step": trainer.state.global_step, "train_loss": loss,
                                            "train_seconds": seconds, "processes": len(starts)})
    log.info("%s", summary(records, seconds, session.run_dir))


def trainer_arguments(cfg: DictConfig, output_dir: Path) -> dict:
    """Keyword arguments of `TrainingArguments` (or a subclass: TRL's GRPOConfig) from `cfg.train`."""
    t = cfg.train
    full_ft = cfg.strategy.peft.method == "none"
    batch = effective_batch(t, int(os.environ.get("WORLD_SIZE", "1")))  # accumulation from train.global_batch_size
    return dict(
        output_dir=str(output_dir),
        learning_rate=t.full_ft_learning_rate if full_ft else t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # transformers 5: a value < 1 is a fraction of the steps
        weight_decay=t.weight_decay,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=batch["per_device_train_batch_size"],
        gradient_accumulation_steps=batch["gradient_accumulation_steps"],
        bf16=bool(t.bf16) and torch.cuda.is_available(),
        fp16=bool(t.fp16),  # refused on CPU (config.check_hardware)
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
        # The clipper does all clipping (its `global` mode is clip_grad_norm_'s math);
        # the Trainer's own clipping stays off so nothing is clipped twice.
        max_grad_norm=0.0,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],  # wandb is written by the clip callback (aggc.train.wandb_log): one run, with the clip series
        run_name=output_dir.parent.name,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        save_only_model=False,
    )


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


