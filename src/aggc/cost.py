"""What a grid will cost, and whether each cell fits its GPUs, before any GPU time is spent
(printed by the grid's plan: `make table1 DRY_RUN=1`).

Each cell's model is built on the meta device (no weights, no download) from the published
`config.json` of its checkpoint, shipped in src/aggc/models/published/<hub id>/, and wrapped
by its strategy as training wraps it (`aggc.train.strategy.apply_strategy`, peft adapters
created empty); its AGGC groups are `aggc.clipping.grouping`'s. From that and the cell's
resolved config, with the assumptions of `conf/grid.yaml`'s `gpu` section:

- memory per GPU (estimate): weights (frozen ones in model.dtype, trained ones float32) +
  gradients (4 B per trained parameter) + AdamW state (8 B per trained parameter), divided
  by the GPUs under FSDP2; + activations of one micro-batch of b sequences of s tokens
  (data.max_length; GRPO: prompt + completion) at 2 B (bf16 autocast) or 4 B per value:
  b*s*L*(10h + 3k + 4i + 7r) without activation checkpointing, b*s*(L*h + 10h + 3k + 4i + 7r)
  with it (h hidden size, k key/value width, i MLP width, L layers, r LoRA rank; a decoder
  layer's saved tensors with SDPA attention), + b*s*a*s*3 per layer for eager attention
  (DeBERTa's relative attention) + the logits b*s*V*(2 or 4 + 8) (float32 log-softmax and
  its gradient; GRPO: the completion's logits, log-softmax a sequence at a time, as TRL
  computes them); GRPO adds the reference model and vLLM's reserved fraction. Then x1.1
  (allocator fragmentation) + 1 GiB (CUDA context, workspaces).
- tokens (estimate): training rows (data.limit, or the set's published size) x epochs x the
  mean tokenized length of the shipped sample records (tests/fixtures), capped at
  data.max_length, with the model's own tokenizer when it is in the local cache, otherwise
  SmolLM2's (the one LLM tokenizer here offline).
- GPU-hours: tokens x FLOPs per token / (peak FLOP/s of the precision x MFU). FLOPs per
  token: forward 2N + 2Ls h (causal attention at s tokens); Full FT 3 forwards (backward
  twice the forward), adapters 2 (no weight gradients of the frozen base), + 1 with
  activation checkpointing; GRPO + 2 (reference log-probabilities and generation, a lower
  bound: decoding is memory-bound).
- disk: the final model (merged, in model.dtype) + train.save_total_limit checkpoints of
  the trained weights and their AdamW state.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from .paths import ROOT

PUBLISHED = Path(__file__).parent / "models" / "published"
FIXTURES = ROOT / "tests" / "fixtures"
GIB = 1024**3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Training rows of sets that the configs take whole (no data.limit): their published sizes.
PUBLISHED_ROWS = {"gsm8k_train": 7473, "math_train": 7500, "mnli": 392702, "sst2": 67349, "mrpc": 3668, "cola": 8551,
                  "qnli": 104743, "qqp": 363846, "rte": 2490, "stsb": 5749}
GLUE_FOLDERS = {"sst2": "SST-2", "cola": "CoLA", "rte": "RTE", "stsb": "STS-B", "qnli": "QNLI", "mnli": "MNLI",
                "mrpc": "MRPC", "qqp": "QQP"}
LOCALHOST = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


@dataclass
class Estimate:
    """One cell's numbers (per seed)."""

    trainable: int
    total: int
    groups: int
    tensors: int
    global_batch: int
    precision: str
    gpus: int
    memory: dict  # GiB per GPU: weights, grads, optimizer, activations, extra, total
    fits: bool
    tokens: float
    tokens_measured: bool
    gpu_hours: float
    disk_gb: float


def published_config(hub_id: str):
    """The checkpoint's architecture from its published config.json (shipped, no network)."""
    from transformers import AutoConfig

    path = PUBLISHED / hub_id
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no published config for {hub_id} under {PUBLISHED}: add its config.json there")
    return AutoConfig.from_pretrained(path)


def local_checkpoint(model: dict) -> Path | None:
    """The directory of a hub model given as a local path (`model.hub_id=<run>/final`: a model
    another run trained, as make demo-real-grpo starts from its LoRA SFT), else None. A repo id
    is `name` or `owner/name`; a path with more parts (a relative runs_root's run, as the
    Makefile passes `runs/demo-real`), an absolute one or one starting with '.' is a directory,
    and so is an existing directory (`myrun/final`: from_pretrained reads it as one)."""
    hub_id = str(model.get("hub_id") or "")
    path = Path(hub_id)
    is_path = path.is_absolute() or hub_id.startswith(".") or len(path.parts) > 2 or (bool(hub_id) and path.is_dir())
    return path if model["kind"] == "hub" and is_path else None


def architecture(model: dict):
    """The transformers config of a `model` config: the published one of a hub or GGUF model,
    the tiny models' own dimensions; a local checkpoint's own config.json, or, before the run
    that writes it has trained, the published one of the model config it was named from
    (conf/model/<model.name>.yaml: training keeps the architecture)."""
    from transformers import AutoConfig, DebertaV2Config, LlamaConfig

    if model["kind"] == "tiny":
        arch, vocab = model["arch"], model["tokenizer"]["vocab_size"]
        if model.get("architecture") == "deberta_v2":
            return DebertaV2Config(vocab_size=vocab, relative_attention=True, position_biased_input=False,
                                   pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", **arch)
        return LlamaConfig(vocab_size=vocab, tie_word_embeddings=True, **arch)
    local = local_checkpoint(model)
    if local is not None:
        if (local / "config.json").exists():
            return AutoConfig.from_pretrained(local)
        import yaml

        return published_config(yaml.safe_load((ROOT / "conf" / "model" / f"{model['name']}.yaml").read_text())["hub_id"])
    return published_config(model["hub_id"])


def _key(cfg: DictConfig) -> str:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return json.dumps([model, OmegaConf.to_container(cfg.strategy, resolve=True), cfg.clip.get("groups"),
                       cfg.data.get("num_labels")], sort_keys=True)


def _build(key: str) -> dict:
    """A model x strategy built on the meta device: its parameter counts, AGGC groups and the
    dimensions the memory and FLOP estimates read."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from .clipping.grouping import group_parameters
    from .train.strategy import apply_strategy

    model_spec, strategy, groups, num_labels = json.loads(key)
    config = architecture(model_spec)
    seq_cls = model_spec["task"] == "seq_cls"
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' deprecation notes, printed on peft's behalf
        if seq_cls:
            config.num_labels = num_labels or 2
            model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model = apply_strategy(model, OmegaConf.create(strategy), task_type="SEQ_CLS" if seq_cls else "CAUSAL_LM",
                               head_modules=model_spec.get("head_modules", ()) if seq_cls else (), empty=True)
    params = list(model.named_parameters())
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    grouped = group_parameters(params, groups or "trainable") if trainable else {}
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    dims = {"hidden": config.hidden_size, "layers": config.num_hidden_layers, "heads": heads,
            "kv": getattr(config, "num_key_value_heads", None) or heads, "head_dim": head_dim,
            "mlp": config.intermediate_size, "vocab": config.num_labels if seq_cls else config.vocab_size}
    return {"trainable": trainable, "total": sum(p.numel() for _, p in params), "groups": len(grouped),
            "tensors": sum(len(v) for v in grouped.values()), "dims": dims}


@lru_cache(maxsize=None)
def counts(key: str, cache_dir: str) -> dict:
    """`_build`, cached in cache_dir/model_counts.json per config and transformers / peft
    version (a plan then neither builds nor imports torch again)."""
    from importlib.metadata import version

    digest = hashlib.sha256(json.dumps([key, version("transformers"), version("peft")]).encode()).hexdigest()[:16]
    store = Path(cache_dir) / "model_counts.json"
    known = json.loads(store.read_text()) if store.exists() else {}
    if digest not in known:
        known[digest] = _build(key)
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(store)  # several plans at once: each writes whole files
    return known[digest]


def sample_texts(data: dict) -> list[str]:
    """The shipped sample records of a training set (tests/fixtures/<set>_sample.jsonl in the
    set's own format; GLUE's train_sample.tsv; generated arith problems), as a model reads them."""
    from .data.formats import CONVERTERS, format_prompt

    def text(record: dict) -> str:
        return format_prompt(record["instruction"]) + " " + record["output"]

    name = data["name"].removesuffix("_local")
    if data["kind"] == "arith":
        from .data.arith import generate

        return [text(CONVERTERS["arith"](r)) for r in generate(32, 0, "train")]
    path = FIXTURES / f"{name}_sample.jsonl"
    fmt = name.removesuffix("_train")
    if path.exists() and fmt in CONVERTERS:
        return [text(CONVERTERS[fmt](json.loads(line))) for line in path.read_text().splitlines() if line.strip()]
    folder = data.get("folder") or GLUE_FOLDERS.get(data.get("task", ""))
    if folder and (FIXTURES / "glue" / folder / "train_sample.tsv").exists():
        lines = (FIXTURES / "glue" / folder / "train_sample.tsv").read_text().splitlines()[1:]
        return [" ".join(line.split("\t")) for line in lines if line.strip()]
    return []


STAND_IN = "SmolLM2-135M (stand-in)"


def tokenizer_name(model: dict) -> str:
    """The model's own tokenizer when the local Hugging Face cache holds it, else SmolLM2's
    (shipped in a Python package: the one LLM tokenizer here offline)."""
    from huggingface_hub import try_to_load_from_cache

    local = local_checkpoint(model)
    if local is not None:
        return str(local) if (local / "tokenizer_config.json").exists() else STAND_IN
    if model["kind"] == "hub" and isinstance(try_to_load_from_cache(model["hub_id"], "tokenizer_config.json"), str):
        return model["hub_id"]
    return STAND_IN


@lru_cache(maxsize=None)
def tokenizer(name: str):
    from transformers import AutoTokenizer

    if name != STAND_IN:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    import yaml

    from .models import gguf_package_dir

    smol = yaml.safe_load((ROOT / "conf" / "model" / "smollm2_135m.yaml").read_text())
    return AutoTokenizer.from_pretrained(gguf_package_dir(smol), gguf_file=smol["gguf_file"])


def mean_tokens(model: dict, data: dict, cache_dir: Path) -> float | None:
    """Mean tokenized length of the shipped samples (capped at data.max_length), cached in
    cache_dir/token_estimates.json; None when the set ships no sample, or for the tiny models
    (CPU minutes: not worth loading a tokenizer for)."""
    texts = sample_texts(data) if model["kind"] != "tiny" else []
    if not texts:
        return None
    name = tokenizer_name(model)
    key = hashlib.sha256(json.dumps([texts, name]).encode()).hexdigest()[:16]
    store = Path(cache_dir) / "token_estimates.json"
    known = json.loads(store.read_text()) if store.exists() else {}
    if key not in known:
        lengths = [len(tokenizer(name)(t)["input_ids"]) for t in texts]
        known[key] = {"lengths": lengths, "tokenizer": name}
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(known, indent=1))
    lengths = [min(n, data["max_length"]) for n in known[key]["lengths"]]
    return sum(lengths) / len(lengths)


def training_rows(data: dict) -> int | None:
    if data.get("limit"):
        return data["limit"]
    if data["kind"] == "arith":
        return data["train_size"]
    return PUBLISHED_ROWS.get(data.get("task") or data["name"])


def memory(cfg: DictConfig, dims: dict, trainable: int, total: int, gpus: int, gpu: DictConfig) -> dict:
    """GiB per GPU (the module docstring's formula)."""
    t, method = cfg.train, cfg.strategy.peft.method
    frozen = total - trainable
    weights = frozen * BYTES[cfg.model.dtype] + trainable * 4
    grads, optimizer = trainable * 4, trainable * 8
    shard = gpus if t.fsdp else 1
    h, layers, heads, i = dims["hidden"], dims["layers"], dims["heads"], dims["mlp"]
    kv = dims["kv"] * dims["head_dim"]
    r = cfg.strategy.peft.r if method in ("lora", "dora") else 0
    grpo = cfg.train.get("grpo") if cfg.strategy.get("trainer") == "grpo" else None
    s = cfg.data.max_length + (grpo.max_completion_length if grpo else 0)
    b = t.per_device_train_batch_size
    act_bytes = 2 if t.bf16 or t.fp16 else 4
    per_layer = 10 * h + 3 * kv + 4 * i + 7 * r + (3 * heads * s if cfg.model.task == "seq_cls" else 0)
    kept = layers * h + per_layer if t.activation_checkpointing else layers * per_layer
    vocab = dims["vocab"]
    if grpo:  # TRL: logits of the completion tokens only, log-softmax one sequence at a time in float32
        logits = b * grpo.max_completion_length * vocab * act_bytes + grpo.max_completion_length * vocab * 8
    else:
        logits = b * s * vocab * (act_bytes + 8)
    activations = b * s * kept * act_bytes + logits
    gathered = 2 * (total / layers) * BYTES[cfg.model.dtype] if shard > 1 else 0  # FSDP: a layer gathered, one prefetched
    extra = gathered
    if grpo:
        extra += total * BYTES[cfg.model.dtype] / shard if grpo.kl_coef else 0  # the reference model
        extra += grpo.vllm_gpu_memory_utilization * gpu.memory_gb * GIB if grpo.use_vllm else 0
    parts = {"weights": weights / shard, "grads": grads / shard, "optimizer": optimizer / shard,
             "activations": activations, "extra": extra}
    gib = {k: v / GIB for k, v in parts.items()}
    gib["total"] = sum(gib.values()) * 1.1 + 1
    return gib


def flops_per_token(cfg: DictConfig, dims: dict, total: int) -> float:
    s = cfg.data.max_length
    forward = 2 * total + 2 * dims["layers"] * s * dims["hidden"]
    passes = 3 if cfg.strategy.peft.method in ("none", "bitfit") else 2
    passes += 1 if cfg.train.activation_checkpointing else 0
    passes += 2 if cfg.strategy.get("trainer") == "grpo" else 0
    return passes * forward


def estimate(cfg: DictConfig, gpus: int, gpu: DictConfig) -> Estimate:
    """The numbers of one cell's training config `cfg` on `gpus` GPUs of the kind `gpu`."""
    from .config import effective_batch

    built = counts(_key(cfg), str(cfg.cache_dir))
    trainable, total, groups, tensors, dims = (built[k] for k in ("trainable", "total", "groups", "tensors", "dims"))
    trains = cfg.strategy.get("trains", True)
    batch = effective_batch(cfg.train, gpus)["global_batch_size"] if trains else 0
    precision = f"{cfg.model.dtype} weights" + (", bf16 autocast" if cfg.train.bf16 else ", fp16 autocast" if cfg.train.fp16 else "")
    mem = memory(cfg, dims, trainable if trains else 0, total, gpus, gpu) if trains else \
        {"weights": total * BYTES[cfg.model.dtype] / GIB, "grads": 0, "optimizer": 0, "activations": 0, "extra": 0,
         "total": total * BYTES[cfg.model.dtype] / GIB * 1.1 + 1}
    data = OmegaConf.to_container(cfg.data, resolve=True)
    per_row = mean_tokens(OmegaConf.to_container(cfg.model, resolve=True), data, Path(cfg.cache_dir))
    rows = training_rows(data)
    measured = per_row is not None
    per_row = per_row if measured else data["max_length"]
    t = cfg.train
    grpo = t.get("grpo") if cfg.strategy.get("trainer") == "grpo" else None
    epochs = t.num_train_epochs if t.max_steps == -1 else None
    if grpo:  # every prompt's completions: prompt + half the completion budget on average (assumed)
        per_row = grpo.num_generations * (per_row + grpo.max_completion_length / 2)
    tokens = (rows or 0) * per_row * epochs if epochs else t.max_steps * batch * per_row / (grpo.num_generations if grpo else 1)
    if not trains:
        tokens = 0.0
    peak = gpu.peak_tflops.bf16 if (t.bf16 or t.fp16) else gpu.peak_tflops.fp32
    hours = tokens * flops_per_token(cfg, dims, total) / (peak * 1e12 * gpu.mfu) / 3600
    checkpoint = (trainable * 12) * t.save_total_limit if trains else 0
    disk = total * BYTES[cfg.model.dtype] + checkpoint
    return Estimate(trainable if trains else 0, total, groups if trains else 0, tensors if trains else 0, batch, precision,
                    gpus, mem, mem["total"] <= gpu.memory_gb, tokens, measured, hours, disk / 1e9)


def data_reachable(data: DictConfig) -> str:
    """Whether a training set can be read here: generated, a local file, or in the HF cache."""
    if data.kind == "arith":
        return "generated"
    if data.kind == "hub":
        from huggingface_hub import constants

        cached = (Path(constants.HF_HUB_CACHE) / f"datasets--{data.hub_id.replace('/', '--')}").exists()
        return "in the HF cache" if cached else f"NOT in the HF cache ({data.hub_id}: the first run downloads it)"
    paths = [Path(str(v)) for k, v in data.items() if k in ("path", "root") and v]
    missing = [str(p) for p in paths if not p.exists()]
    return "local file" if not missing else f"MISSING {', '.join(missing)}"


def model_reachable(model: DictConfig) -> str:
    if model.kind != "hub":
        return "local"
    local = local_checkpoint(OmegaConf.to_container(model, resolve=True))
    if local is not None:
        return "local checkpoint" if (local / "config.json").exists() else f"NOT YET TRAINED ({local})"
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(model.hub_id, "config.json", revision=model.get("revision")), str)
    return "in the HF cache" if cached else f"NOT in the HF cache ({model.hub_id})"


def judge_warning(eval_cfg: DictConfig, launcher: str) -> str | None:
    """A warning when MT-Bench's judge is this machine's localhost and the evaluation runs
    on a Slurm compute node, where that address is the node itself."""
    url = eval_cfg.eval.judge.base_url
    host = urlparse(url).hostname or ""
    if launcher != "local" and host in LOCALHOST:
        return (f"WARNING: the MT-Bench judge is {url}, which on a compute node is the node itself: set "
                "AGGC_JUDGE_BASE_URL to the judge server's address as the nodes reach it (and AGGC_JUDGE_MODEL)")
    return None


def _fmt_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def report(cfg: DictConfig, spec: dict, grid: list, configs: dict, evals: dict) -> dict:
    """Print one line per cell (its seeds together) and the grid's totals; returns the
    estimate of each (model, data, row). `configs`: {a cell of each (model, data, row): its
    resolved training config}; `evals`: the benchmarks' evaluation configs."""
    gpu, launcher = cfg.gpu, cfg.launcher
    seeds: dict = {}
    for cell in grid:
        seeds[(cell.model, cell.data, cell.row)] = seeds.get((cell.model, cell.data, cell.row), 0) + 1
    print(f"\ncost and fit (estimates; GPU: {gpu.name}, {gpu.memory_gb} GB, peak {gpu.peak_tflops.bf16} TFLOP/s bf16 / "
          f"{gpu.peak_tflops.fp32} fp32 at MFU {gpu.mfu}; formulas: aggc.cost):")
    label_width = max(len(row["label"]) for row in spec["rows"])
    print(f"  {'model':<20} {'data':<13} {'row':<{label_width}} {'trainable':>9} {'groups x tensors':>16} {'batch':>5} "
          f"{'precision':<33} {'GPUs':>4} {'GiB/GPU = w+g+opt+act+extra':>34} {'fit':<4} {'tokens':>7} {'GPU-h':>8} {'disk GB':>8}"
          "  (tokens per seed; GPU-h and disk for all seeds)")
    estimates, totals = {}, {"hours": 0.0, "disk": 0.0, "cells": 0, "unfit": 0}
    for cell, train_cfg in configs.items():
        e = estimate(train_cfg, cell.gpus, gpu)
        n = seeds[(cell.model, cell.data, cell.row)]
        estimates[(cell.model, cell.data, cell.row)] = e
        m = e.memory
        parts = f"{m['weights']:.1f}+{m['grads']:.1f}+{m['optimizer']:.1f}+{m['activations']:.1f}+{m['extra']:.1f}"
        print(f"  {cell.model:<20} {cell.data:<13} {spec['rows'][cell.row]['label']:<{label_width}} {_fmt_count(e.trainable):>9} "
              f"{e.groups:>7} x {e.tensors:<6} {e.global_batch:>5} {e.precision:<33} {e.gpus:>4} "
              f"{m['total']:>6.1f} = {parts:<25} {'yes' if e.fits else 'NO':<4} "
              f"{('' if e.tokens_measured else '≤') + _fmt_count(e.tokens):>7} {e.gpu_hours * n:>8.1f} {e.disk_gb * n:>8.1f}"
              + (f"  x{n} seeds" if n > 1 else ""))
        totals["hours"] += e.gpu_hours * n
        totals["disk"] += e.disk_gb * n
        totals["cells"] += n
        totals["unfit"] += 0 if e.fits else n
    print(f"  total: {totals['cells']} training cells, {totals['hours']:.0f} GPU-hours of training ({gpu.name}, estimate; "
          f"evaluation not counted), {totals['disk'] / 1000:.2f} TB of final models and checkpoints"
          + (f"; {totals['unfit']} cells do not fit {gpu.memory_gb} GB per GPU: not submitted (more GPUs: the row's "
             "resources.gpus; or activation checkpointing, a smaller per-device batch)" if totals["unfit"] else ""))
    print("  tokens: rows x epochs x mean tokenized length of the shipped samples (≤: no sample or a tiny model: data.max_length)")
    models = {c.model: t.model for c, t in configs.items()}
    datas = {c.data: t.data for c, t in configs.items()}
    print("  models: " + "; ".join(f"{name} {model_reachable(m)}" for name, m in models.items()))
    print("  data: " + "; ".join(f"{name} {data_reachable(d)}" for name, d in datas.items()))
    for bench, eval_cfg in evals.items():
        if eval_cfg.eval.get("kind") == "mt_bench":
            warning = judge_warning(eval_cfg, launcher)
            print(f"  {warning}" if warning else f"  MT-Bench judge: {eval_cfg.eval.judge.base_url} ({eval_cfg.eval.judge.model})")
    return estimates
