import torch

from aggc.clipping import ClipConfig


def lora_params(grads: dict[str, list[float]]) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters named like peft LoRA tensors, with the given gradients."""
    params = []
    for name, values in grads.items():
        p = torch.nn.Parameter(torch.zeros(len(values)))
        p.grad = torch.tensor(values, dtype=torch.float32)
        params.append((name, p))
    return params


def name(module: str, layer: int = 0, part: str = "A") -> str:
    block = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
    return f"base_model.model.model.layers.{layer}.{block}.{module}.lora_{part}.default.weight"


def aggc(**overrides) -> ClipConfig:
    return ClipConfig.from_dict({"mode": "aggc", **overrides})
