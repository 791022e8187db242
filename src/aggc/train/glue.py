"""GLUE (Table 2): sequence classification with the HF Trainer. Full FT, BitFit, LoRA,
DoRA and AGGC (LoRA + clip=aggc) on DeBERTa (`model.task: seq_cls`).

The run life cycle is the one every trainer shares (`session`: run directory, resume,
clip callback, final model, COMPLETED); only the data, the model head and the
initialisation are GLUE's. `data.init_from: glue_mnli` (STS-B, RTE, MRPC in the paper)
starts the backbone from the same model / strategy / clip / seed's MNLI run (its
`final/`, adapters merged) with a new task head (`model.head_modules`); that run must be
COMPLETED, or this one refuses to start.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

from ..config import ConfigError, check_hardware, validate
from ..data import glue as glue_data
from ..models import load_classifier_and_tokenizer
from . import rundir
from .session import finish_run, open_run, trainer_arguments
from .strategy import apply_strategy, in_modules

log = logging.getLogger(__name__)


def predecessor_run(cfg: DictConfig) -> Path | None:
    """The run this one starts from (`data.init_from`): `<runs_root>/<model>/<init_from>/
    <strategy>-<clip>/seed<N>`, the training stage's own layout; None without init_from."""
    source = cfg.data.get("init_from")
    if not source:
        return None
    return Path(cfg.runs_root) / cfg.model.name / source / f"{cfg.strategy.name}-{cfg.clip.name}" / f"seed{cfg.seed}"


def check_predecessor(cfg: DictConfig) -> Path | None:
    run = predecessor_run(cfg)
    if run is not None and not (rundir.is_completed(run) and (run / "final").is_dir()):
        raise ConfigError(
            f"data.init_from={cfg.data.init_from}: this run starts from {run}, which is not COMPLETED. Train it first: "
            f"python -m aggc.train model={cfg.model.name} data={cfg.data.init_from} strategy={cfg.strategy.name} "
            f"clip={cfg.clip.name} seed={cfg.seed} runs_root={cfg.runs_root} (or set data.init_from=null)"
        )
    return run


def load_model(cfg: DictConfig, predecessor: Path | None):
    """The classifier to train: the base model with a new head (seeded), its backbone
    replaced by the predecessor's final weights when the task starts from another run."""
    labels = cfg.data.get("label_names")
    model, tokenizer = load_classifier_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir),
                                                     cfg.data.num_labels, list(labels) if labels else None)
    if predecessor is not None:
        load_backbone(model, predecessor / "final", list(cfg.model.head_modules))
    return model, tokenizer


def load_backbone(model, final: Path, head_modules: list[str]) -> None:
    """Copy every weight of `final` but the head's into `model` (strict on the rest)."""
    files = sorted(final.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{final}: no safetensors weights")
    state = {k: v for f in files for k, v in load_file(f).items() if not in_modules(k, head_modules)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not in_modules(k, head_modules)]
    if missing or unexpected:
        raise RuntimeError(f"{final} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    log.info("backbone from %s (%d tensors); new head %s", final, len(state), head_modules)


def run(cfg: DictConfig, run_dir: Path) -> Path:
    """Train one GLUE cell into `run_dir`; resume from its last whole checkpoint if any."""
    clip = validate(cfg)
    check_hardware(cfg, torch.cuda.is_available())
    if cfg.model.task != "seq_cls":
        raise ConfigError(f"model.task={cfg.model.task!r}: the GLUE stage trains sequence classifiers (model.task=seq_cls)")
    if "task" not in cfg.data:
        raise ConfigError(f"data={cfg.data.name}: not a GLUE task (a data config with `task`, e.g. data=glue_cola)")
    if not cfg.strategy.get("trains", True):
        raise ConfigError(f"strategy={cfg.strategy.name}: an untrained classification head scores chance; not a GLUE run")
    run_dir = Path(run_dir)
    if rundir.is_completed(run_dir):
        log.info("%s is COMPLETED; nothing to do", run_dir)
        return run_dir
    data_spec = OmegaConf.to_container(cfg.data, resolve=True)
    glue_data.check_source(data_spec)
    predecessor = check_predecessor(cfg)

    session = open_run(cfg, run_dir, clip)
    if session.main_process and predecessor is not None:
        rundir.update_manifest(run_dir, init_from=str(predecessor))

    set_seed(cfg.seed)
    model, tokenizer = load_model(cfg, predecessor)
    model = apply_strategy(model, cfg.strategy, task_type="SEQ_CLS", head_modules=list(cfg.model.head_modules))
    dataset = glue_data.train_dataset(data_spec, tokenizer)

    trainer = Trainer(
        model=model,
        args=TrainingArguments(**trainer_arguments(cfg, session.checkpoints)),
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[session.callback],
    )
    finish_run(session, trainer, tokenizer, session.train(trainer))
    return run_dir
