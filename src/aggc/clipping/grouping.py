"""Partition trainable tensors into AGGC groups by functional module type.

All `q_proj` tensors of every layer form one group, all `v_proj` another, and so on.
With LoRA a group holds that module type's adapter tensors (`lora_A`, `lora_B`, DoRA's
`lora_magnitude_vector`). The module type is read from the parameter's dotted name, so
wrappers (DDP's `module.`, peft's `base_model.model.`) do not matter.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch

OTHER = "other"
# Trainable tensors outside the adapters under clip.groups=lora (a task head).
HEAD_PREFIX = "head:"

# Ordered: the first rule whose pattern matches a parameter name wins. DeBERTa's
# `attention.output.dense` must be tried before its layer `output.dense`.
GROUP_RULES: tuple[tuple[str, str], ...] = (
    # Llama / Mistral / Gemma / Qwen
    *((m, rf"(^|\.){m}(\.|$)") for m in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
    # DeBERTa(-v2/v3)
    *((m, rf"(^|\.){m}(\.|$)") for m in ("query_proj", "key_proj", "value_proj")),
    ("attention_output", r"(^|\.)attention\.output\.dense(\.|$)"),
    ("intermediate", r"(^|\.)intermediate\.dense(\.|$)"),
    ("output", r"(^|\.)output\.dense(\.|$)"),
    # Non-linear tensors of a full fine-tune (GRPO's `groups: trainable`)
    ("embed", r"(^|\.)(embed_tokens|embeddings)(\.|$)"),
    ("lm_head", r"(^|\.)lm_head(\.|$)"),
    ("norm", r"(^|\.)[A-Za-z_]*(norm|LayerNorm)(\.|$)"),
    ("classifier", r"(^|\.)(classifier|pooler|score)(\.|$)"),
)
_COMPILED = tuple((name, re.compile(pattern)) for name, pattern in GROUP_RULES)
_ADAPTER = re.compile(r"(^|\.)lora_[A-Za-z_]+(\.|$)")


def module_type(param_name: str) -> str:
    """The functional module type of a parameter, or `other` when no rule matches."""
    for group, pattern in _COMPILED:
        if pattern.search(param_name):
            return group
    return OTHER


def is_adapter_tensor(param_name: str) -> bool:
    """LoRA / DoRA adapter tensors (`lora_A`, `lora_B`, `lora_magnitude_vector`, ...)."""
    return bool(_ADAPTER.search(param_name))


def group_parameters(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]], groups: str
) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Group every trainable tensor by module type, so that every tensor the optimizer
    updates is clipped and falls under the non-finite policy.

    `groups='trainable'` (the GRPO setting) groups them all alike. `groups='lora'` (the
    authors' LoRA setting) groups the adapter tensors by the module they adapt; a trainable
    tensor that is no adapter (a GLUE task head, peft's `modules_to_save`) gets a group of
    its own module type, prefixed `head:` (`head:classifier`), so it never mixes with an
    adapter group. A LoRA model must have adapter tensors.

    Returns `{group: [(name, param), ...]}` in first-seen order, so group indices are
    stable across processes and resumes.
    """
    if groups not in ("lora", "trainable"):
        raise ValueError(f"clip.groups={groups!r}: must be 'lora' or 'trainable'")
    grouped: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        group = module_type(name)
        if groups == "lora" and not is_adapter_tensor(name):
            group = HEAD_PREFIX + group
        grouped.setdefault(group, []).append((name, param))
    if groups == "lora" and all(g.startswith(HEAD_PREFIX) for g in grouped):
        raise ValueError("clip.groups=lora: the model has no trainable LoRA/DoRA tensors (use clip.groups=trainable)")
    if not grouped:
        raise ValueError(f"clip.groups={groups}: no trainable tensors to clip")
    return grouped
