"""Model loading: the locally pretrained tiny Llama or a hub checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aggc.models.tiny import build_tiny_llama, load_tiny, pretrained_tiny_base, train_tokenizer

__all__ = ["build_tiny_llama", "load_model_and_tokenizer", "pretrained_tiny_base", "train_tokenizer"]


def load_model_and_tokenizer(spec: dict, cache_dir: Path):
    """(model, tokenizer) for the `model` config group.

    `tiny`: the cached local base. `hub`: from_pretrained on `hub_id` with
    `dtype` ("bfloat16" or "float32") and optional `revision`; the pad token
    falls back to EOS, as Llama checkpoints ship without one.
    """
    kind = spec.get("kind")
    if kind == "tiny":
        return load_tiny(spec, cache_dir)
    if kind == "hub":
        dtypes = {"bfloat16": torch.bfloat16, "float32": torch.float32}
        dtype = spec.get("dtype", "bfloat16")
        if dtype not in dtypes:
            raise ValueError(f"unknown model.dtype {dtype!r}; expected one of {sorted(dtypes)}")
        revision = spec.get("revision")
        model = AutoModelForCausalLM.from_pretrained(spec["hub_id"], dtype=dtypes[dtype], revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(spec["hub_id"], revision=revision)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer
    raise ValueError(f"unknown model.kind {kind!r}; expected 'tiny' or 'hub'")
