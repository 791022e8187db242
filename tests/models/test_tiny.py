"""The locally built tiny Llama: tokenizer, architecture and the pretraining cache."""

import time

import pytest
from transformers import AutoTokenizer, LlamaForCausalLM

from aggc.data import arith
from aggc.models import build_tiny_llama, load_model_and_tokenizer, pretrained_tiny_base, tiny, train_tokenizer

ARCH = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 128,
}
SPEC = {
    "kind": "tiny",
    "arch": ARCH,
    "tokenizer": {"vocab_size": 300},
    "pretrain": {
        "seed": 0,
        "num_examples": 64,
        "drill_docs": 16,
        "drill_size": 4,
        "steps": 2,
        "batch_size": 8,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "warmup_steps": 1,
        "max_length": 96,
    },
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([tiny.pretrain_text(r) for r in arith.generate(200, 0, "pretrain")], vocab_size=300)


def test_numbers_are_tokenized_one_digit_per_token(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("has 4096 apples", add_special_tokens=False)["input_ids"])
    assert [t for t in tokens if any(c.isdigit() for c in t)] == ["4", "0", "9", "6"]


def test_tokenizer_round_trips_through_save_pretrained(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Question: Tom has 12 apples.\nAnswer: 12 + 7 = 19"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(loaded, name) == getattr(tokenizer, name) is not None
    assert loaded(text)["input_ids"][0] == loaded.bos_token_id


def test_pretraining_corpus_is_problems_plus_equation_drills():
    records = arith.generate(10, 0, "pretrain")
    texts = tiny.pretrain_texts(records, drill_size=4, drill_docs=3)
    assert texts[:10] == [tiny.pretrain_text(r) for r in records]
    for drill in texts[10:]:
        lines = drill.split("\n")
        assert len(lines) >= 4 and all(" = " in line and "answer" not in line for line in lines)


def test_model_has_the_standard_llama_linear_names(tokenizer):
    model = build_tiny_llama(ARCH, tokenizer)
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= leaf_names
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_pretrained_base_is_cached_keyed_by_the_base_defining_keys_only(tmp_path):
    path = pretrained_tiny_base(SPEC, tmp_path)
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    start = time.perf_counter()
    assert pretrained_tiny_base(SPEC, tmp_path) == path
    assert time.perf_counter() - start < 0.1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary directory left behind
    assert pretrained_tiny_base({**SPEC, "name": "tiny_llama", "lora_r": 4}, tmp_path) == path
    other = dict(SPEC, pretrain={**SPEC["pretrain"], "seed": 1})
    assert pretrained_tiny_base(other, tmp_path) != path


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_the_cache_entry_follows_the_umask_not_mkdtemps_0700(tmp_path, umask):
    """A cache shared by a group (umask 002) or read by others (022) is not locked to its builder."""
    import os

    previous = os.umask(umask)
    try:
        path = pretrained_tiny_base(SPEC, tmp_path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask
    assert all(f.stat().st_mode & 0o777 == 0o666 & ~umask for f in path.iterdir())


def test_pretraining_is_deterministic(tmp_path):
    first, _ = load_model_and_tokenizer(SPEC, tmp_path / "a")
    second, _ = load_model_and_tokenizer(SPEC, tmp_path / "b")
    for (name, p), (_, q) in zip(first.state_dict().items(), second.state_dict().items()):
        assert p.equal(q), name


def test_a_crash_while_saving_leaves_no_cache_entry(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        pretrained_tiny_base(SPEC, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_kind_and_dtype_name_the_config_key(tmp_path):
    with pytest.raises(ValueError, match="model.kind"):
        load_model_and_tokenizer({"kind": "onnx"}, tmp_path)
    with pytest.raises(ValueError, match="model.dtype"):
        load_model_and_tokenizer({"kind": "hub", "hub_id": "unused/offline", "dtype": "float16x"}, tmp_path)
