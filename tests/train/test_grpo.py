"""GRPO (RLVR, Table 5): the verifiable reward on real GSM8K and MATH records, the recipe's
checks, `make table5 TINY=1` end to end on the embedded tiny model (train, evaluate,
table, figure), resume, and the zero-variance ("GRPO loss is 0") warning."""

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aggc.config import GRPO_PROTOCOLS, ConfigError, clip_config, effective_batch
from aggc.data.formats import load_sft_records
from aggc.paths import ROOT
from aggc.train import grpo, rundir
from aggc.train.callback import ClipCallback
from transformers import TrainingArguments

from ._helpers import config, only_run

FIXTURES = Path(__file__).parents[1] / "fixtures"
GROUPS = {"embed", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "norm"}
KL_COEF = 0.001
# The tiny table's training overrides (after its own train=grpo_tiny): 3 steps, a checkpoint
# each, completions of at most 16 tokens (generation is most of a step's time).
TINY_TRAIN = ("train.max_steps=3", "train.save_steps=1", "train.grpo.max_completion_length=16", "data.train_size=64")


def records(name: str, fmt: str) -> list[dict]:
    return load_sft_records({"kind": "jsonl", "path": str(FIXTURES / name), "format": fmt}, "train")


def reward(fmt: str, completions: list, answers: list[str], protocol: str = "alpaca") -> list[float]:
    task, rule = grpo.ANSWER_RULES[protocol][fmt]
    return grpo.correctness_reward(rule, grpo.stop_strings(task))(completions=completions, answer=answers, prompts=None)


# --- the reward -------------------------------------------------------------------------

def test_gsm8k_reward_is_the_authors_rule_on_real_records():
    gold = [r["answer"] for r in records("gsm8k_train_sample.jsonl", "gsm8k")]
    assert gold == ["72", "10", "1080"]
    own = [r["output"] for r in records("gsm8k_train_sample.jsonl", "gsm8k")]  # each solution ends "The answer is: N"
    assert reward("gsm8k", own, gold) == [1.0, 1.0, 1.0]
    assert reward("gsm8k", own, gold[1:] + gold[:1]) == [0.0, 0.0, 0.0]
    assert reward("gsm8k", ["So 1,080 in all. The answer is: 1,080", "The answer is: 9.6", "She earned $10."], ["1080", "10", "10"]) \
        == [1.0, 1.0, 0.0]  # thousands separator; rounded (the authors' rule); no answer line -> wrong
    # chat completions (a list of messages) read the same
    assert reward("gsm8k", [[{"role": "assistant", "content": own[0]}]], ["72"]) == [1.0]


def test_reward_cuts_at_the_evaluations_stop_strings():
    """The evaluation stops at "Question:" (lm-eval's `until`), so a later answer line of a
    made-up next question must not count: the reward reads what the evaluation scores."""
    stops = grpo.stop_strings("gsm8k.yaml")
    assert "Question:" in stops and "Instruction" in stops and "</s>" in stops
    rambling = "48 + 24 = 72\nThe answer is: 72\n\nQuestion: Tom has 3 apples.\nThe answer is: 3"
    assert reward("gsm8k", [rambling, rambling], ["72", "3"]) == [1.0, 0.0]


def test_math_reward_normalises_like_the_evaluation_on_real_records():
    rows = records("math_test_sample.jsonl", "math")
    gold = [r["answer"] for r in rows]
    assert gold == [r"\frac{14}{3}", "28", "2000"]
    assert reward("math", [r["output"] for r in rows], gold) == [1.0, 1.0, 1.0]
    assert reward("math", [r"So f sums to \dfrac{14}{3}. The answer is: \dfrac{14}{3}.", "The answer is: 28^\\circ",
                           r"The answer is: \boxed{2000}", "The answer is: 2001"], gold + ["2000"]) \
        == [1.0, 1.0, 0.0, 0.0]  # dfrac and degrees normalised; \boxed kept (the authors' rule)


def test_math_training_records_take_the_last_boxed_answer(tmp_path):
    """The hub's MATH train split has no `answer` field: the solution's last \\boxed{} is the gold."""
    raw = [json.loads(line) for line in (FIXTURES / "math_test_sample.jsonl").read_text().splitlines()]
    for record in raw:
        record.pop("answer")
    path = tmp_path / "math_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in raw))
    converted = load_sft_records({"kind": "jsonl", "path": str(path), "format": "math"}, "train")
    assert [r["answer"] for r in converted] == [r"\frac{14}{3}", "28", "2000"]
    assert converted[0]["output"].endswith("\nThe answer is: \\frac{14}{3}")


# --- Table 5's protocol: verl's example prompts and rewards ----------------------------------

def test_verl_protocol_prompts_as_verls_examples_and_the_evaluation_tasks_ask():
    """The user turn is the question, a space and verl's instruction (examples/data_preprocess/
    gsm8k.py, math_dataset.py), the same text the Table 5 evaluation tasks render."""
    from lm_eval.tasks._yaml_loader import load_yaml

    gsm8k_instruction = 'Let\'s think step by step and output the final answer after "####".'
    math_instruction = "Let's think step by step and output the final answer within \\boxed{}."
    row = [{"instruction": "What is 2 + 3?", "output": "x", "answer": "5"}]
    for fmt, instruction, task, field in (("gsm8k", gsm8k_instruction, "gsm8k_verl.yaml", "question"),
                                          ("arith", gsm8k_instruction, "gsm8k_verl.yaml", "question"),
                                          ("math", math_instruction, "math_verl.yaml", "problem")):
        [prompt] = grpo.prompt_dataset(row, True, "d", "verl", fmt)["prompt"]
        assert prompt == [{"role": "user", "content": f"What is 2 + 3? {instruction}"}]
        assert load_yaml(ROOT / "evaluation" / task)["doc_to_text"].replace("{{" + field + "}}", "What is 2 + 3?") == prompt[0]["content"]
        assert grpo.ANSWER_RULES["verl"][fmt][0] == task


def test_verl_protocol_rewards_verls_format_and_not_the_sft_one():
    """verl's GSM8K reward: "#### N" (strict, the last one), 0 for the SFT "The answer is: N";
    verl's MATH reward: the last \\boxed{}, equivalent after verl's normalisation. Chat
    completions read the same, and nothing is cut (generation ends at the chat's end of turn)."""
    assert grpo.stop_strings("gsm8k_verl.yaml") == [] and grpo.stop_strings("math_verl.yaml") == []
    completions = ["3 + 4 = 7\n#### 7", "#### 1,080", "The answer is: 7", "#### 7.", [{"role": "assistant", "content": "#### 7"}]]
    assert reward("gsm8k", completions, ["7", "1080", "7", "7", "7"], "verl") == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert reward("arith", completions[:1], ["7"], "verl") == [1.0]
    assert reward("math", ["so \\boxed{\\dfrac{14}{3}}", "The answer is: \\frac{14}{3}", "\\boxed{28^\\circ}"],
                  ["\\frac{14}{3}", "\\frac{14}{3}", "28"], "verl") == [1.0, 0.0, 1.0]


def test_prompts_without_an_answer_are_dropped_and_none_is_an_error():
    data = grpo.prompt_dataset([{"instruction": "a", "output": "x", "answer": "1"}, {"instruction": "b", "output": "y"}], False, "d")
    assert data["answer"] == ["1"] and data["prompt"][0].endswith("### Instruction:\na\n\n### Response:")
    chat = grpo.prompt_dataset([{"instruction": "a", "output": "x", "answer": "1"}], True, "d")
    assert chat["prompt"][0] == [{"role": "user", "content": data["prompt"][0]}]
    with pytest.raises(ConfigError, match="data=d: no record has a reference answer"):
        grpo.prompt_dataset([{"instruction": "b", "output": "y"}], False, "d")


# --- the recipe's checks (before anything is loaded) --------------------------------------

@pytest.mark.parametrize("overrides, cuda, message", [
    (["strategy=grpo"], False, "train.grpo: strategy=grpo needs a GRPO recipe"),
    # protocol=alpaca: verl's prompts need a chat model, which tiny_llama is not (refused first, at compose time)
    (["strategy=grpo", "train=grpo_paper", "train.grpo.protocol=alpaca"], False, "train.grpo.use_vllm=true: vLLM generates on GPUs only"),
    (["strategy=grpo_aggc", "train=grpo_tiny", "train.grpo.num_generations=1"], False, "train.grpo.num_generations=1"),
    (["strategy=grpo", "train=grpo_tiny", "train.grpo.num_generations=3"], True, "must be a multiple of train.grpo.num_generations=3"),
    (["strategy=grpo", "train=grpo_tiny", "train.grpo.kl_coef=-1"], False, "train.grpo.kl_coef=-1"),
    (["strategy=grpo", "train=grpo_tiny", "train.grpo.protocol=verl"], False, "train.grpo.protocol=verl: verl's prompts"),
    (["strategy=grpo", "train=grpo_tiny", "train.grpo.protocol=pissa"], False, "train.grpo.protocol='pissa': one of alpaca, verl"),
])
def test_bad_recipes_fail_naming_the_key(overrides, cuda, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        grpo.check_grpo(config(*overrides, smoke=False), cuda)


def test_the_compose_time_protocols_are_the_trainers():
    """aggc.config checks train.grpo.protocol before torch loads; its list is ANSWER_RULES'."""
    assert set(GRPO_PROTOCOLS) == set(grpo.ANSWER_RULES)


def test_paper_recipe_and_strategies_compose():
    cfg = config("model=qwen25_3b_instruct", "data=gsm8k_train", "strategy=grpo_aggc", "train=grpo_paper", smoke=False)
    t, g = cfg.train, cfg.train.grpo
    assert (t.learning_rate, t.full_ft_learning_rate, t.weight_decay, t.lr_scheduler_type) == (1e-6, 1e-6, 0.01, "constant")
    assert effective_batch(t, 4)["global_batch_size"] == 512 * g.num_generations and g.num_generations == 5
    assert g.kl_coef == 0.001 and cfg.strategy.peft.method == "none" and cfg.model.dtype == "float32"
    assert (cfg.clip.name, cfg.clip.groups, cfg.clip.beta) == ("aggc_grpo", "trainable", 0.99)
    assert config("strategy=grpo", smoke=False).clip.name == "global"
    assert g.protocol == "verl" and cfg.model.chat_template  # Table 5: verl's prompts and rewards, the chat template
    with pytest.raises(ConfigError, match="data=codefeedback"):
        grpo.answer_rule(config("data=codefeedback", smoke=False).data, "verl")


# --- make table5 TINY=1, shrunk: train (Base, GRPO, GRPO + AGGC), evaluate, tabulate -------

@pytest.fixture(scope="module")
def tiny_table5(tmp_path_factory):
    root = tmp_path_factory.mktemp("table5")
    proc = subprocess.run(
        [sys.executable, "-m", "aggc.grid", "table=table5", "tiny=true", f"runs_root={root / 'runs'}", f"out_dir={root / 'out'}",
         f"train_args='{' '.join(TINY_TRAIN)}'", "eval_args='eval.limit=3 max_gen_toks=8'"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root


@pytest.mark.slow
def test_tiny_table5_trains_evaluates_and_draws_the_curves(tiny_table5):
    root = tiny_table5
    table = (root / "out" / "table5.md").read_text()
    rows = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| ")}
    for label in ("Base", "GRPO", "AGGC"):
        assert "(n=1)" in rows[label], rows[label]  # trained and evaluated
    assert "tiny version: tiny_llama" in table
    assert (root / "out" / "grpo_curves.png").stat().st_size > 10_000
    with open(root / "out" / "table5_curves.csv", newline="") as f:  # every step of both runs, from their metrics.jsonl
        curves = [(r["strategy"], r["seed"], r["step"]) for r in csv.DictReader(f)]
    assert curves == [(label, "0", str(step)) for label in ("GRPO", "GRPO + AGGC") for step in range(3)]


@pytest.mark.slow
@pytest.mark.parametrize("strategy, clip", [("grpo", "global"), ("grpo_aggc", "aggc_grpo")])
def test_grpo_run_logs_reward_kl_and_pg_loss_per_step(tiny_table5, strategy, clip):
    run = only_run(tiny_table5 / "runs", strategy=strategy, clip=clip)
    assert (run / "COMPLETED").exists() and (run / "final" / "model.safetensors").exists()
    assert "trainer: grpo" in (run / "config.yaml").read_text()
    metrics = rundir.read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [0, 1, 2]
    for r in metrics:
        assert 0 <= r["reward"] <= 1 and (r["reward"] * 8) == pytest.approx(round(r["reward"] * 8))  # 2 prompts x 4
        assert r["frac_reward_zero_std"] in (0.0, 0.5, 1.0) and r["kl"] >= 0 and r["entropy"] > 0
        assert r["pg_loss"] == r["loss"] - KL_COEF * r["kl"]  # the objective less kl_coef x KL
        if r["frac_reward_zero_std"] == 1.0:  # every advantage 0: no policy gradient
            assert r["pg_loss"] == pytest.approx(0.0, abs=1e-7)
        assert set(r["norms"]) == GROUPS and set(r["factors"]) == GROUPS  # full-parameter, every module type
        for g in GROUPS:
            assert r["post_norms"][g] == pytest.approx(r["norms"][g] * r["factors"][g], rel=1e-6, abs=1e-12)
    assert metrics[0]["kl"] == 0.0  # before the first update the policy is the reference
    if strategy == "grpo_aggc":  # AGGC's interval per group (the EMA starts at 0: from step 1 on)
        assert all(r["upper"][g] is not None and r["ema"][g] is not None for r in metrics[1:] for g in GROUPS)
        assert all(0.9 - 1e-9 <= f <= 1.1 + 1e-9 for r in metrics for f in r["factors"].values())
    else:  # global clipping at 1.0: one factor for all groups, never above 1
        assert all(len(set(r["factors"].values())) == 1 and r["factors"]["embed"] <= 1.0 for r in metrics)


def test_step_record_gains_the_grpo_logs_and_sft_records_stay_as_they_were(tmp_path):
    """The clip callback's per-step record merges GRPO's reward / KL / PG loss; an SFT log
    (no such keys) gives the record it always gave."""
    model = torch.nn.Sequential()
    model.add_module("q_proj", torch.nn.Linear(2, 2))
    metrics = rundir.MetricsLog(tmp_path / "metrics.jsonl")
    callback = ClipCallback(clip_config(config("strategy=grpo", smoke=False)), metrics)
    state = type("State", (), {"max_steps": 2, "global_step": 0})()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    callback.on_train_begin(args, state, None, model=model)
    grpo_logs = {"loss": 0.1, "learning_rate": 1e-6, "reward": 0.5, "reward_std": 0.4, "frac_reward_zero_std": 0.5,
                 "kl": 0.02, "pg_loss": 0.08, "entropy": 0.7, "completions/mean_length": 20.0}
    for logs in ({"loss": 0.5, "learning_rate": 2e-5, "grad_norm": 1.5}, grpo_logs):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        callback.on_pre_optimizer_step(None, state, None)
        state.global_step += 1
        callback.on_log(None, state, None, logs=logs)
    metrics.close()
    sft, rl = rundir.read_metrics(tmp_path / "metrics.jsonl")
    keys = {"step", "norms", "post_norms", "factors", "lower", "upper", "ema", "skipped", "nonfinite_groups", "loss", "lr", "grad_norm"}
    assert set(sft) == keys and (sft["loss"], sft["lr"]) == (0.5, 2e-5)
    assert sft["grad_norm"] == pytest.approx(6 ** 0.5), "the clipper's pre-clip total over every tensor (all ones: 4 + 2)"
    assert set(rl) == keys | {"reward", "reward_std", "frac_reward_zero_std", "kl", "pg_loss", "entropy"}
    assert (rl["step"], rl["reward"], rl["kl"], rl["pg_loss"], rl["frac_reward_zero_std"]) == (1, 0.5, 0.02, 0.08, 0.5)


def test_pg_loss_is_the_objective_less_the_kl_term(monkeypatch):
    """Over a step of two micro-batches, TRL logs the objective (their sum) and the mean of
    the micro-batches' token-mean KL; pg_loss takes kl_coef x that mean off the objective."""
    logged = []
    monkeypatch.setattr(grpo.GRPOTrainer, "log", lambda self, logs, start_time=None: logged.append(dict(logs)))
    trainer = grpo.RLVRTrainer.__new__(grpo.RLVRTrainer)  # only what `log` reads
    trainer.beta, trainer._metrics = KL_COEF, {"train": {"kl": [0.02, 0.04]}}
    trainer.log({"loss": 0.1, "learning_rate": 1e-6})
    trainer._metrics = {"train": {}}  # kl_coef 0: no KL metric, the objective is all policy gradient
    trainer.beta = 0.0
    trainer.log({"loss": 0.2})
    trainer.log({"train_runtime": 1.0})  # the end-of-training summary is not a step
    assert logged[0]["pg_loss"] == pytest.approx(0.1 - KL_COEF * 0.03, rel=1e-12)
    assert logged[1]["pg_loss"] == 0.2 and "pg_loss" not in logged[2]


def tiny_config(strategy: str, clip: str, *extra: str):
    """The config a tiny table5 cell trains with (its training command's overrides)."""
    return config(f"strategy={strategy}", f"clip={clip}", "train=grpo_tiny", "wandb.mode=disabled", *TINY_TRAIN, *extra, smoke=False)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_weights(tiny_table5, tmp_path, one_thread):
    """A run killed after checkpoint-2 and started again resumes there (clipper state, RNG,
    data position) and ends with the weights of the run never interrupted."""
    straight = only_run(tiny_table5 / "runs", strategy="grpo_aggc", clip="aggc_grpo")
    killed = tmp_path / "killed"
    shutil.copytree(straight, killed)
    (killed / "COMPLETED").unlink()
    shutil.rmtree(killed / "final")
    shutil.rmtree(killed / "checkpoints" / "checkpoint-3")
    grpo.run(tiny_config("grpo_aggc", "aggc_grpo"), killed)
    assert rundir.read_json(killed / "manifest.json")["resumed_from"] == ["checkpoint-2"]
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before, after = rundir.read_metrics(straight / "metrics.jsonl"), rundir.read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in after] == [0, 1, 2]
    assert [(r["norms"], r["reward"], r["kl"]) for r in after] == [(r["norms"], r["reward"], r["kl"]) for r in before]


# --- the "GRPO loss is always 0" trap ---------------------------------------------------------

@pytest.mark.slow
def test_constant_reward_is_flagged_with_the_zero_variance_fraction(tmp_path, monkeypatch, caplog, one_thread):
    """Every completion right: all groups have reward std 0, so every advantage is 0 and the
    PG loss is 0 at every step; the run says so with the fraction of such groups."""
    monkeypatch.setitem(grpo.ANSWER_RULES["alpaca"], "arith", ("gsm8k.yaml", lambda completion, gold: True))
    with caplog.at_level(logging.WARNING, logger="aggc.train.grpo"):
        grpo.run(tiny_config("grpo", "global", "train.max_steps=2", "train.grpo.max_completion_length=8"), tmp_path / "run")
    metrics = rundir.read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [(r["reward"], r["reward_std"], r["frac_reward_zero_std"]) for r in metrics] == [(1.0, 0.0, 1.0)] * 2
    assert all(r["pg_loss"] == pytest.approx(0.0, abs=1e-9) for r in metrics)
    warnings = [m for m in caplog.messages if "fraction of zero-variance groups 1.00" in m]
    assert len(warnings) == 2 and "step 1:" in warnings[0] and "reward mean 1.000" in warnings[0]


def test_zero_variance_warning_only_from_its_threshold(caplog):
    warn = grpo.ZeroVarianceWarning(0.5)
    state = type("State", (), {"global_step": 7})()
    with caplog.at_level(logging.WARNING, logger="aggc.train.grpo"):
        warn.on_log(None, state, None, logs={"frac_reward_zero_std": 0.25, "reward": 0.4})
        warn.on_log(None, state, None, logs={"loss": 0.1})  # an SFT-style log: nothing to say
        assert not caplog.messages
        warn.on_log(None, state, None, logs={"frac_reward_zero_std": 0.5, "reward": 0.4})
    assert len(caplog.messages) == 1 and "step 7: fraction of zero-variance groups 0.50" in caplog.messages[0]


# --- make table5 DRY_RUN=1 ------------------------------------------------------------------

def test_table5_dry_run_prints_the_cluster_plan(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", "table=table5", "dry_run=true", f"runs_root={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "3 models x 3 rows x 2 training sets x 3 seeds = 42 training cells, 42 evaluations" in out  # Base: one seed
    # one training multirun per row and training set
    assert out.count("would run: -m aggc.train -m") == 6 and out.count("would run: -m aggc.evaluate -m") == 2
    assert "data=gsm8k_train strategy=grpo_aggc clip=aggc_grpo seed=0,1,2" in out
    assert "data=math_train strategy=grpo_aggc clip=aggc_grpo seed=0,1,2" in out
    assert "eval=gsm8k_verl 'run=<" in out and "eval=math_verl 'run=<" in out  # verl's rules, Base too
    cells = (tmp_path / "plan" / "table5.train.txt").read_text().splitlines()
    assert len(cells) == 42 and all(c.endswith(" train=grpo_paper") for c in cells)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]  # nothing trained


@pytest.mark.slow
def test_table8_reports_the_peak_memory_of_the_table5_runs(tiny_table5):
    """make table8 TINY=1 after table5: nothing new trains; each row's memory is its run's
    manifest peak (RSS on CPU), in GiB."""
    out = tiny_table5 / "out8"
    proc = subprocess.run(
        [sys.executable, "-m", "aggc.grid", "table=table8", "tiny=true", f"runs_root={tiny_table5 / 'runs'}", f"out_dir={out}",
         f"train_args='{' '.join(TINY_TRAIN)}'"],  # table5's runs: the same configs
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "to do: 0 of 2 training cells" in proc.stdout
    rows = {r["strategy"]: r for r in csv.DictReader((out / "table8.csv").open())}
    for label, (strategy, clip) in (("GRPO", ("grpo", "global")), ("AGGC", ("grpo_aggc", "aggc_grpo"))):
        manifest = json.loads((only_run(tiny_table5 / "runs", strategy=strategy, clip=clip) / "manifest.json").read_text())
        assert rows[label]["benchmark"] == "peak_rss_gb" and rows[label]["n"] == "1"
        assert float(rows[label]["mean"]) == pytest.approx(manifest["peak_rss_mb"] / 1024, abs=1e-4)


# --- layout-free sampling ------------------------------------------------------------------

def test_layout_free_sampling_draws_from_the_tempered_softmax_and_each_row_from_its_own_seed():
    """Greedy decoding over `LayoutFreeSampling`'s scores is a sample of softmax(logits / T)
    (chi-square over 4000 draws), and a row's draws depend on its seed only: the same seed
    gives the same tokens alone or beside other rows, another seed other tokens."""
    from scipy.stats import chisquare

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    temperature = 0.7
    sampler = grpo.LayoutFreeSampling(list(range(4000)), temperature, torch.device("cpu"))
    tokens = sampler(None, logits.expand(4000, -1)).argmax(-1)
    expected = torch.softmax(logits / temperature, -1) * 4000
    assert chisquare(torch.bincount(tokens, minlength=5).numpy(), expected.numpy()).pvalue > 1e-3

    def draws(seeds, row):
        sampler = grpo.LayoutFreeSampling(seeds, 1.0, torch.device("cpu"))
        return [int(sampler(None, torch.zeros(len(seeds), 50)).argmax(-1)[row]) for _ in range(20)]

    alone, beside_others = draws([11], 0), draws([5, 11, 7], 1)
    assert alone == beside_others
    assert draws([12], 0) != alone



def test_every_completion_of_a_run_has_its_own_seed():
    """completion_seed is a hash of (seed, step, row, evaluation), not a linear mix: tuples that
    a weighted sum maps together ((0, 1, 0) and (0, 0, 65537), or (1, 0, 0) and (0, 0, 1000003))
    get different seeds, an evaluation's rows draw apart from training's, and torch accepts them."""
    tuples = [(seed, step, row, evaluation) for seed in range(3) for step in range(20) for row in range(64)
              for evaluation in (False, True)]
    seeds = [grpo.completion_seed(*t) for t in tuples]
    assert len(set(seeds)) == len(tuples)
    assert grpo.completion_seed(0, 1, 0) != grpo.completion_seed(0, 0, 65_537)
    assert grpo.completion_seed(1, 0, 0) != grpo.completion_seed(0, 0, 1_000_003)
    assert all(0 <= s < 2**63 for s in seeds)
    torch.Generator().manual_seed(max(seeds))


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_layout_free_sampling_refuses_a_temperature_that_is_not_positive(temperature):
    """logits / 0 gives inf - inf = NaN scores and an arbitrary argmax: refused, not sampled."""
    with pytest.raises(ValueError, match="temperature"):
        grpo.LayoutFreeSampling([0], temperature, torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """The tiny base saved as a local checkpoint (a `model.kind=hub` folder), to give it the
    generation_config.json a hub model ships."""
    from omegaconf import OmegaConf

    from aggc.models import load_model_and_tokenizer
    from aggc.train.session import save_final

    cfg = config(smoke=False)
    folder = tmp_path_factory.mktemp("tiny_base")
    save_final(*load_model_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir)), folder)
    return folder


@pytest.mark.parametrize("generation, refused", [
    ({"min_p": 0.2}, "min_p=0.2"),
    ({"typical_p": 0.9, "num_beams": 2}, "typical_p=0.9, num_beams=2"),
    # Qwen2.5-Instruct's: TRL's explicit top_p=1, top_k=0, temperature and penalty override them
    ({"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}, None),
])
def test_a_models_sampling_settings_the_layout_free_sampler_would_drop_are_refused(generation, refused, tiny_base, tmp_path, one_thread):
    """HF generate completes TRL's sampling settings from the model's generation_config.json, so
    TRL alone samples a model that sets min_p with min_p; LayoutFreeSampling samples
    softmax(logits / T). Such a model is refused before training; one whose settings TRL's own
    override (an instruct model's top_p, top_k) trains."""
    model = tmp_path / "model"
    shutil.copytree(tiny_base, model)
    (model / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, **generation}))
    cfg = tiny_config("grpo", "global", "model.kind=hub", f"+model.hub_id={model}", "train.max_steps=1",
                      "train.grpo.max_completion_length=4")
    if refused is None:
        grpo.run(cfg, tmp_path / "run")
        assert (tmp_path / "run" / "COMPLETED").exists()
        return
    with pytest.raises(ConfigError, match=re.escape(f"does not apply {refused} that HF generate would take")):
        grpo.run(cfg, tmp_path / "run")
    assert not list((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))


def test_completions_are_distributed_as_trls_own_generate_path(tmp_path, one_thread):
    """RLVRTrainer's generation (LayoutFreeSampling) against GRPOTrainer's own HF path on the
    same trainer: per position, the tokens of 1500 completions of one prompt follow the same
    distribution (chi-square over the tokens both drew 5+ times, the rest pooled), with a
    temperature and a repetition penalty (TRL's, a logits processor); each completion ends
    at its first end-of-sequence token or at max_completion_length, as TRL's."""
    from omegaconf import OmegaConf
    from scipy.stats import chi2_contingency

    from aggc.models import load_model_and_tokenizer

    cfg = tiny_config("grpo", "global", "train.grpo.temperature=1.5", "train.grpo.max_completion_length=2")
    records = load_sft_records(OmegaConf.to_container(cfg.data, resolve=True), "train")
    prompts = list(grpo.prompt_dataset(records[:1], cfg.model.chat_template, cfg.data.name)["prompt"])
    model, tokenizer = load_model_and_tokenizer(OmegaConf.to_container(cfg.model, resolve=True), Path(cfg.cache_dir))
    task, rule = grpo.answer_rule(cfg.data, cfg.train.grpo.protocol)
    trainer = grpo.RLVRTrainer(model=model, reward_funcs=grpo.correctness_reward(rule, grpo.stop_strings(task)),
                               args=grpo.grpo_arguments(cfg, tmp_path), train_dataset=grpo.prompt_dataset(records, False, "d"),
                               processing_class=tokenizer)
    trainer.generation_config.repetition_penalty = 1.3
    prompt_ids = trainer._tokenize_prompts(prompts * 1500)[0]
    ours = trainer._generate_single_turn(prompt_ids, None, {}, 4)[0]
    torch.manual_seed(0)
    trls = grpo.GRPOTrainer._generate_single_turn(trainer, prompt_ids, None, {}, 4)[0]
    for completions in (ours, trls):
        assert all(0 < len(c) <= 2 and not set(c[:-1]) & set(trainer.eos_token_ids) for c in completions)
    for position in range(2):
        counts = [Counter(c[position] for c in completions if len(c) > position) for completions in (ours, trls)]
        common = sorted(t for t in counts[0] if counts[0][t] >= 5 and counts[1][t] >= 5)
        table = [[n[t] for t in common] + [sum(n.values()) - sum(n[t] for t in common)] for n in counts]
        assert len(common) >= 3 and chi2_contingency(table).pvalue > 1e-3, (position, counts)
