"""Parameters group by functional module type, whatever wrapper prefixes their names."""

import pytest
import torch

from aggc.clipping import group_parameters, module_type


@pytest.mark.parametrize(
    "param_name, expected",
    [
        ("model.layers.3.self_attn.q_proj.weight", "q_proj"),
        ("module.base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight", "v_proj"),
        ("base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector.default.weight", "down_proj"),
        ("deberta.encoder.layer.0.attention.self.query_proj.lora_A.default.weight", "query_proj"),
        ("deberta.encoder.layer.0.attention.output.dense.weight", "attention_output"),
        ("deberta.encoder.layer.0.intermediate.dense.weight", "intermediate"),
        ("deberta.encoder.layer.0.output.dense.weight", "output"),
        ("model.layers.0.input_layernorm.weight", "norm"),
        ("model.embed_tokens.weight", "embed"),
        ("lm_head.weight", "lm_head"),
        ("some.rotary_thing.weight", "other"),
    ],
)
def test_module_type_from_name(param_name, expected):
    assert module_type(param_name) == expected


def _params(*names, frozen=()):
    out = []
    for n in names:
        p = torch.nn.Parameter(torch.zeros(2), requires_grad=n not in frozen)
        out.append((n, p))
    return out


def test_lora_grouping_merges_layers_and_gives_other_trainable_tensors_a_head_group():
    """Adapter tensors group by the module they adapt; a trainable tensor that is no adapter
    (a task head) is still clipped, in a `head:` group of its own; frozen tensors are not."""
    params = _params(
        "m.layers.0.self_attn.q_proj.base_layer.weight",
        "m.layers.0.self_attn.q_proj.lora_A.default.weight",
        "m.layers.1.self_attn.q_proj.lora_B.default.weight",
        "m.layers.0.mlp.up_proj.lora_magnitude_vector.default.weight",
        "m.norm.weight",
        "classifier.modules_to_save.default.weight",
        frozen=("m.layers.0.self_attn.q_proj.base_layer.weight", "m.norm.weight"),
    )
    groups = group_parameters(params, "lora")
    assert {g: [n for n, _ in ms] for g, ms in groups.items()} == {
        "q_proj": ["m.layers.0.self_attn.q_proj.lora_A.default.weight", "m.layers.1.self_attn.q_proj.lora_B.default.weight"],
        "up_proj": ["m.layers.0.mlp.up_proj.lora_magnitude_vector.default.weight"],
        "head:classifier": ["classifier.modules_to_save.default.weight"],
    }


def test_trainable_grouping_skips_frozen_and_names_unknown_other():
    params = _params("a.q_proj.weight", "a.k_proj.weight", "weird.bias", frozen=("a.k_proj.weight",))
    groups = group_parameters(params, "trainable")
    assert list(groups) == ["q_proj", "other"]


def test_lora_grouping_without_adapters_says_what_to_do():
    with pytest.raises(ValueError, match="clip.groups=trainable"):
        group_parameters(_params("a.q_proj.weight"), "lora")
