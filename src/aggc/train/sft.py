"""Supervised fine-tuning (Full FT, LoRA, DoRA, AGGC; BitFit where the model has biases) with the HF Trainer.

One run = one run directory (see `rundir`). Order of work: validate the config, read the
data, then build the model, so that bad input fails before anything expensive.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

from ..config import ConfigError, check_hardware, validate
from ..data.formats import load_sft_records
from ..data.sft import tokenize_for_sft
from ..models import load_model_and_tokenizer
from . import rundir
from .session import HarnessTrainer, finish_run, open_run, save_final, trainer_arguments
from .strategy import apply_strategy

log = logging.getLogger(__name__)


class SFTTrainer(HarnessTrainer, Trainer):
    """The HF Trainer with the harness's two corrections (`session.HarnessTrainer`)."""


def run(cfg: DictConfig, run_dir: Path) -> Path:
    """Train one cell into `run_dir`; resume from its last whole checkpoint if any."""
    clip = validate(cfg)
    check_hardware(cfg, torch.cuda.is_available())
    if cfg.model.task != "causal_lm":
        raise ConfigError(f"model.task={cfg.model.task!r}: the SFT stage trains causal LMs; sequence classifiers "
                          "(model.task=seq_cls) train in the GLUE stage (aggc.train.glue; `python -m aggc.train` "
                          "dispatches on model.task)")
    run_dir = Path(run_dir)
    if rundir.is_completed(run_dir):
        log.info("%s is COMPLETED; nothing to do", run_dir)
        return run_dir
    records = load_sft_records(OmegaConf.to_container(cfg.data, resolve=True), "train")

    session = open_run(cfg, run_dir, clip)

    set_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir))
    if not cfg.strategy.get("trains", True):  # strategy=base: the untrained model is the result
        session.close()
        if session.main_process:
            save_final(model, tokenizer, run_dir / "final")
            rundir.mark_completed(run_dir, {"global_step": 0})
        return run_dir
    model = apply_strategy(model, cfg.strategy)
    dataset = tokenize_for_sft(records, tokenizer, cfg.data.max_length, cfg.model.chat_template)

    trainer = SFTTrainer(
        model=model,
        args=TrainingArguments(**trainer_arguments(cfg, session.checkpoints)),
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=[session.callback],
    )
    session.train(trainer)
    finish_run(session, trainer, tokenizer)
    return run_dir
