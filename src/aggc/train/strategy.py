"""What a strategy makes trainable, for every trainer (SFT, GLUE): peft LoRA / DoRA
adapters, BitFit's bias terms, or everything (Full FT)."""

from __future__ import annotations

from omegaconf import DictConfig

from ..config import ConfigError


def apply_strategy(model, strategy: DictConfig, task_type: str = "CAUSAL_LM", head_modules=(), empty: bool = False):
    """Wrap or freeze `model` for `strategy.peft.method`.

    `head_modules` (sequence classification: the pooler and classifier) train in every
    strategy: peft's `modules_to_save` for LoRA / DoRA, left unfrozen for BitFit. `empty`:
    adapters created on the meta device, for counting (the grid's cost estimate, `aggc.cost`).
    """
    method = strategy.peft.method
    if method == "none":
        return model
    if method == "bitfit":
        return bitfit(model, head_modules)
    from peft import LoraConfig, get_peft_model

    peft_cfg = strategy.peft
    config = LoraConfig(
        r=peft_cfg.r,
        lora_alpha=peft_cfg.alpha,
        lora_dropout=peft_cfg.dropout,
        target_modules=list(peft_cfg.target_modules),
        use_dora=method == "dora",
        task_type=task_type,
        modules_to_save=list(head_modules) or None,
    )
    return get_peft_model(model, config, low_cpu_mem_usage=empty)


def in_modules(name: str, modules) -> bool:
    """Whether the parameter or state-dict key `name` belongs to one of `modules` (dotted prefixes)."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def bitfit(model, head_modules=()):
    """Freeze everything but the bias terms (and the parameters of `head_modules`)."""
    biases = 0
    for name, param in model.named_parameters():
        in_head = in_modules(name, head_modules)
        is_bias = name.endswith(".bias") or name == "bias"
        param.requires_grad = in_head or is_bias
        biases += is_bias and not in_head
    if not biases:
        raise ConfigError(f"strategy=bitfit: {type(model).__name__} has no bias parameters outside its head, so BitFit would "
                          "train nothing of the model itself")
    return model
