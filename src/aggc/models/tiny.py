"""Tiny models built locally, so the pipeline runs without a hub.

The tiny Llama (the SFT default) is pretrained on arith "pretrain" problems written as
plain "Question: ... Answer: ..." text plus drill sheets of their equations: it learns
(some of) the arithmetic but never sees the Alpaca prompt, so SFT has something real to
teach and the final accuracy depends on how it went.

The tiny DeBERTa (`model=tiny_deberta`, GLUE on CPU) has DeBERTa-v3's architecture
(relative attention, `query_proj` / `key_proj` / `value_proj`), a few small layers and the
same locally trained tokenizer; it is randomly initialised (seeded), not pretrained.
Both are cached under the cache directory, keyed by a hash of what determines them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import (
    AutoTokenizer,
    DebertaV2Config,
    DebertaV2Model,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

from aggc.data import arith
from aggc.data.formats import format_prompt

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
# Bump when the pretraining text or procedure changes, to invalidate old caches.
_CACHE_VERSION = 1


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE; digits are split one per token so that numbers are
    spelled digit by digit and arithmetic is learnable. Adds BOS like Llama."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )


def build_tiny_llama(arch: dict, tokenizer) -> LlamaForCausalLM:
    """Standard Llama modules (q/k/v/o_proj, gate/up/down_proj) so LoRA targets
    the same names as on the real models."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_hidden_layers"],
        num_attention_heads=arch["num_attention_heads"],
        num_key_value_heads=arch["num_key_value_heads"],
        max_position_embeddings=arch["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def pretrain_text(record: dict) -> str:
    return f"Question: {record['question']}\nAnswer: {record['output']}"


def pretrain_texts(records: list[dict], drill_size: int, drill_docs: int) -> list[str]:
    """Word problems plus drill sheets of their bare equations: drills pack
    more arithmetic per token, which the base needs to solve problems exactly."""
    steps = [r["output"].rsplit("\n", 1)[0] for r in records]
    drills = ["\n".join(steps[(i * drill_size + j) % len(steps)] for j in range(drill_size)) for i in range(drill_docs)]
    return [pretrain_text(r) for r in records] + drills


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless seeded shuffled epochs of index batches."""
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i : i + batch_size]


def _pretrain(model: LlamaForCausalLM, tokenizer, texts: list[str], cfg: dict, stop_after: int | None = None) -> list[float]:
    """Causal-LM training on whole examples (padded batches, loss off padding). Returns
    each step's loss; `stop_after` ends it after that many steps (the same schedule: the
    golden test's first steps of the real recipe)."""
    encoded = [(tokenizer(t)["input_ids"] + [tokenizer.eos_token_id])[: cfg["max_length"]] for t in texts]
    generator = torch.Generator().manual_seed(cfg["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg["warmup_steps"], cfg["steps"])
    model.train()
    batches = _batches(len(encoded), cfg["batch_size"], generator)
    progress = tqdm(range(cfg["steps"] if stop_after is None else stop_after), desc="pretrain tiny llama", mininterval=5)
    losses = []
    for step in progress:
        batch = [encoded[i] for i in next(batches)]
        width = max(map(len, batch))
        input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=input_ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        losses.append(loss.item())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def base_spec(spec: dict) -> dict:
    """The part of a `model` spec that determines the base; other keys (LoRA
    rank, targets, names) must not trigger a new pretraining. (`architecture` and `init`
    exist only in non-Llama specs, so the tiny Llama's cache key is unchanged.)"""
    return {key: spec[key] for key in ("architecture", "arch", "tokenizer", "pretrain", "init") if key in spec}


def spec_hash(spec: dict) -> str:
    payload = json.dumps({"base": base_spec(spec), "version": _CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def pretrained_tiny_base(spec: dict, cache_dir: Path) -> Path:
    """Directory with the pretrained tiny model and tokenizer for `spec` (the
    `model` config group), built once and cached under cache_dir/<hash>.

    Built in a temporary sibling directory and renamed into place, so an
    interrupted run never leaves a cache entry that looks complete.
    """
    return _cached(Path(cache_dir) / f"tiny-llama-{spec_hash(spec)}", spec, lambda: build_pretrained_tiny_llama(spec)[:2])


def build_pretrained_tiny_llama(spec: dict, stop_after: int | None = None) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, list[float]]:
    """The tiny Llama's build recipe: tokenizer, initialisation, pretraining (the model, the
    tokenizer and each pretraining step's loss). `stop_after`: only the first steps."""
    cfg = spec["pretrain"]
    torch.manual_seed(cfg["seed"])
    records = arith.generate(cfg["num_examples"], cfg["seed"], "pretrain")
    texts = pretrain_texts(records, cfg["drill_size"], cfg["drill_docs"])
    # The tokenizer also sees the Alpaca prompt so that it is a few tokens, not dozens.
    prompt_texts = [format_prompt(r["question"]) + " " + r["output"] for r in records[:1000]]
    tokenizer = train_tokenizer(texts + prompt_texts, spec["tokenizer"]["vocab_size"])
    model = build_tiny_llama(spec["arch"], tokenizer)
    losses = _pretrain(model, tokenizer, texts, cfg, stop_after)
    return model, tokenizer, losses


def _cached(target: Path, spec: dict, build) -> Path:
    """`target`, built by `build() -> (model, tokenizer)` unless it exists. Built in a
    temporary sibling directory and renamed into place, so an interrupted build never
    leaves a cache entry that looks complete."""
    if target.is_dir():
        return target
    with torch.random.fork_rng(devices=[]):  # a run's randomness must not depend on what the cache held
        model, tokenizer = build()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "aggc_spec.json").write_text(json.dumps(base_spec(spec), indent=2, sort_keys=True))
        # mkdtemp's 0700 (and the 0600 of the weights, written through a temporary file) would lock
        # a shared cache to its builder: as for mkdir and open, the umask decides
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():  # else a concurrent builder won the race: use its entry
            raise
    return target


def build_tiny_deberta(arch: dict, tokenizer) -> DebertaV2Model:
    """DeBERTa-v3's layout at toy size: relative attention (c2p + p2c, log buckets, shared
    key projections, no absolute positions), so LoRA targets and AGGC groups are the real
    model's (`query_proj`, `key_proj`, `value_proj`, ...)."""
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_hidden_layers"],
        num_attention_heads=arch["num_attention_heads"],
        max_position_embeddings=arch["max_position_embeddings"],
        relative_attention=True,
        position_biased_input=False,
        pos_att_type=["p2c", "c2p"],
        position_buckets=arch["position_buckets"],
        share_att_key=True,
        norm_rel_ebd="layer_norm",
        pad_token_id=tokenizer.pad_token_id,
    )
    return DebertaV2Model(config)


def tiny_deberta_base(spec: dict, cache_dir: Path) -> Path:
    """Directory with the tiny DeBERTa encoder (seeded random weights) and its tokenizer
    for `spec` (the `model` config group), built once and cached under cache_dir/<hash>.
    The tokenizer is the tiny Llama's byte-level BPE, trained on generated arith text."""
    def build():
        init = spec["init"]
        records = arith.generate(init["tokenizer_examples"], init["seed"], "pretrain")
        tokenizer = train_tokenizer([pretrain_text(r) for r in records], spec["tokenizer"]["vocab_size"])
        torch.manual_seed(init["seed"])
        return build_tiny_deberta(spec["arch"], tokenizer), tokenizer

    return _cached(Path(cache_dir) / f"tiny-deberta-{spec_hash(spec)}", spec, build)


def load_tiny(spec: dict, cache_dir: Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    path = pretrained_tiny_base(spec, cache_dir)
    return LlamaForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
