"""The embedded default leaves room for strategies to differ: LoRA SFT with the shipped
configs (tiny_llama, arith, train=tiny) through the real training stage lifts held-out
greedy exact match above the base model's, and strictly between 0% and 100%."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from hydra import compose, initialize_config_dir

from aggc.data import extract_answer, format_prompt, load_sft_records
from aggc.evaluate import evaluate
from aggc.models import load_model_and_tokenizer
from aggc.paths import CONF_DIR
from aggc.train import sft

from ._helpers import config

pytestmark = pytest.mark.slow


@torch.no_grad()
def exact_match(model, tokenizer, records: list[dict], batch_size: int = 50) -> float:
    """Greedy decoding; a hit when the number after the last "The answer is: " is the answer."""
    model.eval()
    tokenizer.padding_side = "left"
    hits = 0
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        batch = tokenizer([format_prompt(r["instruction"]) for r in chunk], return_tensors="pt", padding=True)
        out = model.generate(**batch, do_sample=False, max_new_tokens=64, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        hits += sum(extract_answer(t) == r["answer"] for t, r in zip(texts, chunk))
    return hits / len(records)


def test_lora_sft_lifts_exact_match_strictly_between_0_and_1(tmp_path):
    cfg = config("strategy=lora", "wandb.mode=disabled", "train.save_steps=1000", smoke=False)
    base, tokenizer = load_model_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), cfg.cache_dir)
    test = load_sft_records(OmegaConf.to_container(cfg.data, resolve=True), "test")
    before = exact_match(base, tokenizer, test)

    sft.run(cfg, tmp_path)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    after = exact_match(tuned, tokenizer, test)
    print(f"held-out exact match over {len(test)} problems: base {before:.3f}, LoRA {after:.3f}")
    assert 0 < after < 1
    assert after > before

    # The evaluation stage (lm-eval, the authors' scorer) sees the same model the same way.
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        eval_cfg = compose("evaluate", overrides=[f"run={tmp_path}", "eval=arith", "max_gen_toks=64", "batch_size=50"])
    result = json.loads(evaluate(eval_cfg).read_text())
    print(f"aggc.evaluate on the same problems: {result['scores']}")
    assert result["n"] == len(test)
    assert result["score"] == pytest.approx(100 * after, abs=5)
