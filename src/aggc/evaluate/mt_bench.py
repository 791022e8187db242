"""MT-Bench: FastChat's `llm_judge` flow (gen_model_answer -> gen_judgment -> show_result), small.

Reimplemented from github `lm-sys/FastChat` (commit 0e6d3e4beaab66f4d3f93db72541a4abab8af28d,
`fastchat/llm_judge/{gen_model_answer,gen_judgment,common,show_result}.py`), single-answer grading:

1. Answers. Each question's two turns are answered by the run's final model at its category's
   temperature (`eval.sampling=fastchat`, the default: FastChat's `temperature_config`, writing and
   roleplay 0.7, stem and humanities 0.1, the others 0, i.e. greedy; `gen_model_answer.py` samples
   above 1e-4 and takes 0.7 for a category it does not list), or greedily for all (`greedy`), at most
   `max_gen_toks` new tokens, cut at the first of `eval.stop`. Sampled answers are seeded
   (`seed`) per batch of questions of one temperature. The prompt (`prompt` in the result):
   - `chat_template`: with `chat_template=true` and a tokenizer that has one, the conversation so far
     (user, assistant, user) through `tokenizer.apply_chat_template(..., add_generation_prompt=True)`;
   - `alpaca` otherwise: the training prompt (`ALPACA_PROMPT`) for turn 1; for turn 2 the first
     exchange, exactly as the model saw and wrote it (prompt, one space, answer: the layout of an SFT
     example), followed by a new Alpaca instruction block `ALPACA_NEXT_TURN`. The preamble appears
     once, as in FastChat's `alpaca` conversation template.
   `<out>/cache/<name>/answers.jsonl` holds one line per finished question (appended, flushed), so a
   crashed evaluation resumes; lines written under other generation settings are not reused.
2. Judgments. Turn 1 is graded with `single-v1` (`single-math-v1` with the reference answer for the
   categories in NEED_REF_CATS), turn 2 with `single-v1-multi-turn` / `single-math-v1-multi-turn` (the
   whole conversation, both reference answers), through any OpenAI-compatible endpoint (`eval.judge`):
   messages [system, user], temperature 0, max_tokens 2048, as FastChat. The rating is FastChat's
   `[[rating]]` match, else `[rating]`. A reply without one is a parse failure: counted per turn and in
   total, and the turn is left out of the mean (FastChat writes -1 and drops it in show_result), never
   scored 0. `eval.judge.runs=k` asks k times and takes the median of the parsed ratings. Connection,
   rate-limit and 5xx errors are retried a few times with exponential backoff, then the evaluation
   fails (FastChat would record "$ERROR$", i.e. silently a parse failure); every finished reply is in
   `<out>/cache/<name>/judgments.jsonl`, keyed by the request, so the next call resumes.
3. Score: mean rating (1-10) over all rated turns, per turn and per category (show_result).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError
from ..data.formats import ALPACA_PROMPT

# FastChat common.py: the categories graded against a reference answer.
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")
# (needs a reference, turn) -> judge prompt name, as FastChat's make_judge_single.
JUDGE_PROMPTS = {
    (False, 1): "single-v1",
    (True, 1): "single-math-v1",
    (False, 2): "single-v1-multi-turn",
    (True, 2): "single-math-v1-multi-turn",
}
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
# Turn 2 (and later) in the `alpaca` style: appended to the previous prompt + " " + answer.
ALPACA_NEXT_TURN = "\n\n### Instruction:\n{instruction}\n\n### Response:"
LOOPBACK = ("localhost", "127.0.0.1", "::1")
NO_KEY = "EMPTY"  # what a vLLM server started without --api-key accepts (any non-empty string)
SAMPLINGS = ("fastchat", "greedy")
GREEDY_BELOW = 1e-4  # FastChat's gen_model_answer: do_sample only above this temperature


# ---------------------------------------------------------------- inputs


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_inputs(cfg: DictConfig) -> None:
    """Everything that can be wrong with the benchmark config, before a model is loaded."""
    ev = cfg.eval
    judge = ev.judge
    for key in ("base_url", "model"):
        if not judge.get(key):
            raise ConfigError(f"eval.judge.{key} is not set: the OpenAI-compatible judge endpoint needs it")
    runs = judge.get("runs")
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ConfigError(f"eval.judge.runs={runs!r}: must be an integer >= 1")
    for key in ("parallel", "max_tokens"):
        value = judge.get(key)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"eval.judge.{key}={value!r}: must be an integer >= 1")
    if not isinstance(judge.get("retries"), int) or judge.retries < 0:
        raise ConfigError(f"eval.judge.retries={judge.get('retries')!r}: must be an integer >= 0")
    if not isinstance(cfg.max_gen_toks, int) or cfg.max_gen_toks < 1:
        raise ConfigError(f"max_gen_toks={cfg.max_gen_toks!r}: must be an integer >= 1")
    if cfg.backend not in ("hf", "vllm"):
        raise ConfigError(f"backend={cfg.backend!r}: must be one of hf, vllm")
    if ev.get("limit") is not None and (not isinstance(ev.limit, int) or ev.limit < 1):
        raise ConfigError(f"eval.limit={ev.limit!r}: must be null or an integer >= 1")
    if ev.get("sampling") not in SAMPLINGS:
        raise ConfigError(f"eval.sampling={ev.get('sampling')!r}: must be one of {', '.join(SAMPLINGS)}")
    judge_api_key(cfg)
    load_inputs(cfg)


def load_inputs(cfg: DictConfig) -> tuple[list[dict], dict[str, dict], dict[int, list[str]]]:
    """(questions, judge prompts by name, reference answer turns by question id); checks them."""
    ev = cfg.eval
    for key in ("questions", "judge_prompts", "reference_answers"):
        if not ev.get(key) or not Path(ev[key]).is_file():
            raise FileNotFoundError(f"eval.{key}={ev.get(key)}: no such file")
    questions = read_jsonl(Path(ev.questions))
    if ev.get("limit") is not None:
        questions = questions[: ev.limit]
    if not questions:
        raise ConfigError(f"eval.questions={ev.questions}: no questions")
    prompts = {p["name"]: p for p in read_jsonl(Path(ev.judge_prompts))}
    missing = [name for name in JUDGE_PROMPTS.values() if name not in prompts]
    if missing:
        raise ConfigError(f"eval.judge_prompts={ev.judge_prompts}: lacks the judge prompts {', '.join(missing)}")
    refs = {r["question_id"]: r["choices"][0]["turns"] for r in read_jsonl(Path(ev.reference_answers))}
    for q in questions:
        if len(q["turns"]) != 2:
            raise ConfigError(f"eval.questions={ev.questions}: question {q['question_id']} has {len(q['turns'])} turns, not 2")
        if q["category"] in NEED_REF_CATS and len(refs.get(q["question_id"], [])) < 2:
            raise ConfigError(
                f"eval.reference_answers={ev.reference_answers}: no reference answer (2 turns) for question "
                f"{q['question_id']} ({q['category']}), which is graded against one"
            )
    return questions, prompts, refs


def judge_api_key(cfg: DictConfig) -> str:
    """The key from the environment variable `eval.judge.api_key_env`. Unset (or no variable named)
    is fine only for a judge on this machine (a local vLLM server takes any key): "EMPTY"."""
    judge = cfg.eval.judge
    env = judge.get("api_key_env")
    key = os.environ.get(env) if env else None
    if key:
        return key
    if urlparse(str(judge.base_url)).hostname in LOOPBACK:
        return NO_KEY
    raise ConfigError(
        f"eval.judge.api_key_env={env}: the environment variable is not set, and the judge "
        f"(eval.judge.base_url={judge.base_url}) is not on this machine; export it (any non-empty value, "
        f"e.g. {NO_KEY}, for a vLLM server started without --api-key)"
    )


def read_cache(path: Path) -> list[dict]:
    """The records of a cache file; a line cut short by a crash mid-write is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def open_cache(path: Path):
    """The cache file for appending, starting on a fresh line (after a cut-short one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    f.seek(0, os.SEEK_END)
    if f.tell() > 0:
        f.seek(f.tell() - 1)
        if f.read(1) != "\n":
            f.write("\n")
    return f


# ---------------------------------------------------------------- step 1: answers


def prompt_style(cfg: DictConfig, tokenizer) -> str:
    return "chat_template" if cfg.chat_template and getattr(tokenizer, "chat_template", None) else "alpaca"


def render_prompt(style: str, tokenizer, turns: list[str], answers: list[str]) -> str:
    """The prompt for turn `len(answers) + 1`, given the questions and the answers so far."""
    n = len(answers)
    if style == "chat_template":
        messages = []
        for question, answer in zip(turns[:n], answers):
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": turns[n]})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = ALPACA_PROMPT.format(instruction=turns[0])
    for i in range(1, n + 1):
        prompt += " " + answers[i - 1] + ALPACA_NEXT_TURN.format(instruction=turns[i])
    return prompt


def temperature(cfg: DictConfig, category: str) -> float:
    """The sampling temperature of a question's answers: its category's in FastChat's table
    (`eval.temperatures`, else `eval.default_temperature`), or 0 with `eval.sampling=greedy`."""
    if cfg.eval.sampling == "greedy":
        return 0.0
    return float(cfg.eval.temperatures.get(category, cfg.eval.default_temperature))


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The text before the first stop string (as lm-eval's `until`), stripped (as FastChat)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)] if cuts else text).strip()


def _hf_generator(cfg: DictConfig, final: Path, tokenizer, stop: list[str]):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(cfg.seed)
    from . import eval_device, eval_dtype

    device = eval_device(cfg)
    model = AutoModelForCausalLM.from_pretrained(final, dtype=getattr(torch, eval_dtype(cfg)))
    model = model.to(device).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def generate(prompt_ids: list[list[int]], temp: float) -> list[str]:
        width = max(map(len, prompt_ids))  # left padding: every prompt ends where generation starts
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
        # sampled as FastChat samples: its temperature, the model's other generation defaults
        decoding = (dict(do_sample=True, temperature=temp) if temp > GREEDY_BELOW
                    else dict(do_sample=False, temperature=None, top_p=None, top_k=None))
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, **decoding,
                max_new_tokens=cfg.max_gen_toks, pad_token_id=pad, use_cache=True, stop_strings=stop or None, tokenizer=tokenizer,
            )
        return [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]

    return generate


def _vllm_generator(cfg: DictConfig, final: Path, stop: list[str]):
    from vllm import LLM, SamplingParams  # optional extra, GPU only

    from . import eval_dtype

    llm = LLM(model=str(final), seed=cfg.seed, dtype=eval_dtype(cfg))

    def generate(prompt_ids: list[list[int]], temp: float) -> list[str]:
        params = SamplingParams(temperature=temp if temp > GREEDY_BELOW else 0.0, max_tokens=cfg.max_gen_toks,
                                stop=stop or None, seed=cfg.seed)
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    return generate


def generate_answers(cfg: DictConfig, final: Path, questions: list[dict], cache: Path) -> tuple[dict[int, dict], dict]:
    """(answer record by question id, generation settings); generates only what the cache lacks."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(final)
    stop = list(cfg.eval.stop or [])
    settings = {
        "prompt": prompt_style(cfg, tokenizer), "max_new_tokens": cfg.max_gen_toks, "sampling": cfg.eval.sampling,
        "temperatures": {q["category"]: temperature(cfg, q["category"]) for q in questions}, "seed": cfg.seed,
        "stop": stop,
    }
    done = {r["question_id"]: r for r in read_cache(cache) if r.get("settings") == settings}
    pending = [q for q in questions if q["question_id"] not in done]
    generation = {**settings, "backend": cfg.backend, "batch_size": cfg.batch_size, "cached": len(questions) - len(pending)}
    if not pending:
        return done, generation

    # Chat templates carry their own BOS; the Alpaca text gets the tokenizer's usual special tokens.
    special = settings["prompt"] == "alpaca"
    if cfg.backend == "vllm":
        generate, chunk = _vllm_generator(cfg, final, stop), len(pending)
    else:
        generate, chunk = _hf_generator(cfg, final, tokenizer, stop), cfg.batch_size
    import torch

    # one temperature per batch (a generate call samples or not as a whole), each batch seeded
    groups = {}
    for q in pending:
        groups.setdefault(temperature(cfg, q["category"]), []).append(q)
    batches = [(temp, qs[i : i + chunk]) for temp, qs in sorted(groups.items()) for i in range(0, len(qs), chunk)]
    with open_cache(cache) as f, tqdm(total=len(pending), desc="mt_bench answers") as bar:
        for temp, batch in batches:
            torch.manual_seed(cfg.seed)
            answers: list[list[str]] = [[] for _ in batch]
            prompts: list[list[str]] = [[] for _ in batch]
            for turn in range(2):
                texts = [render_prompt(settings["prompt"], tokenizer, q["turns"], a) for q, a in zip(batch, answers)]
                ids = [tokenizer(t, add_special_tokens=special)["input_ids"] for t in texts]
                for a, p, text, out in zip(answers, prompts, texts, generate(ids, temp)):
                    p.append(text)
                    a.append(cut_at_stop(out, stop))
            for q, a, p in zip(batch, answers, prompts):
                record = {"question_id": q["question_id"], "answers": a, "prompts": p, "temperature": temp, "settings": settings}
                f.write(json.dumps(record) + "\n")
                f.flush()
                done[q["question_id"]] = record
            bar.update(len(batch))
    del generate  # the model: its memory is free before the judge step
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return done, generation


# ---------------------------------------------------------------- step 2: judgments


def parse_rating(reply: str) -> float | None:
    """FastChat's single-answer rating: `[[x]]`, else `[x]`; None when the reply has neither."""
    match = ONE_SCORE.search(reply) or ONE_SCORE_BACKUP.search(reply)
    return float(match.group(1)) if match else None


def judge_messages(question: dict, answers: list[str], ref: list[str] | None, turn: int, prompts: dict) -> tuple[str, list[dict]]:
    """(judge prompt name, chat messages) for one turn of one answered question, as FastChat's run_judge_single."""
    name = JUDGE_PROMPTS[(question["category"] in NEED_REF_CATS, turn)]
    template = prompts[name]
    kwargs = {}
    if ref is not None and question["category"] in NEED_REF_CATS:
        kwargs["ref_answer_1"] = ref[0]
        if turn == 2:
            kwargs["ref_answer_2"] = ref[1]
    if turn == 2:
        user = template["prompt_template"].format(
            question_1=question["turns"][0], question_2=question["turns"][1], answer_1=answers[0], answer_2=answers[1], **kwargs
        )
    else:
        user = template["prompt_template"].format(question=question["turns"][0], answer=answers[0], **kwargs)
    system = template["system_prompt"]
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return name, messages


def _client(cfg: DictConfig):
    from openai import OpenAI

    judge = cfg.eval.judge
    # Our own bounded retry loop (below) instead of the client's, so the attempts are explicit.
    return OpenAI(base_url=str(judge.base_url), api_key=judge_api_key(cfg), max_retries=0, timeout=float(judge.timeout_s))


def _ask(client, cfg: DictConfig, request: dict):
    import openai

    judge = cfg.eval.judge
    for attempt in range(judge.retries + 1):
        try:
            return client.chat.completions.create(**request, n=1)
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as err:
            if attempt == judge.retries:
                raise RuntimeError(
                    f"judge {judge.model} at eval.judge.base_url={judge.base_url} failed {attempt + 1} times: {err}"
                ) from err
            time.sleep(float(judge.backoff_s) * 2**attempt)


def judge_answers(
    cfg: DictConfig, questions: list[dict], answers: dict[int, dict], prompts: dict, refs: dict, cache: Path
) -> dict:
    """Judge records by (question id, turn): prompt name and the k replies; asks only what the cache
    lacks. A reply is cached under the hash of its request (model, messages, temperature, max_tokens)
    and its run index, so other answers, prompts or judge settings are asked anew."""
    from tqdm import tqdm

    judge = cfg.eval.judge
    jobs, out = [], {}
    for q in questions:
        for turn in (1, 2):
            qid = q["question_id"]
            name, messages = judge_messages(q, answers[qid]["answers"], refs.get(qid), turn, prompts)
            request = {
                "model": str(judge.model), "messages": messages, "temperature": float(judge.temperature),
                "max_tokens": judge.max_tokens,
            }
            key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
            out[(qid, turn)] = {"prompt_name": name, "key": key, "replies": [None] * judge.runs}
            jobs += [(qid, turn, run, key, request) for run in range(judge.runs)]

    cached = {(r["key"], r["run"]): r for r in read_cache(cache)}
    pending = []
    for qid, turn, run, key, request in jobs:
        if (key, run) in cached:
            out[(qid, turn)]["replies"][run] = cached[(key, run)]
        else:
            pending.append((qid, turn, run, key, request))
    if not pending:
        return out

    client, lock, failed = _client(cfg), threading.Lock(), threading.Event()
    with open_cache(cache) as f, tqdm(total=len(pending), desc="mt_bench judge") as bar:

        def one(qid, turn, run, key, request):
            if failed.is_set():
                return  # another request gave up: end soon, asking nothing more
            try:
                response = _ask(client, cfg, request)
            except BaseException:
                failed.set()
                raise
            reply = response.choices[0].message.content or ""
            record = {
                "question_id": qid, "turn": turn, "run": run, "key": key, "prompt_name": out[(qid, turn)]["prompt_name"],
                "judge_model": str(judge.model), "served_model": response.model, "reply": reply, "rating": parse_rating(reply),
            }
            with lock:
                f.write(json.dumps(record) + "\n")
                f.flush()
                out[(qid, turn)]["replies"][run] = record
                bar.update(1)

        pool = ThreadPoolExecutor(max_workers=judge.parallel)
        try:
            for future in as_completed([pool.submit(one, *job) for job in pending]):
                future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on a failure: finish (and cache) what runs, drop the rest
    return out


# ---------------------------------------------------------------- step 3: score


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate_mt_bench(cfg: DictConfig, final: Path, out_dir: Path, cache_name: str | None = None) -> dict:
    """Answer, judge and score MT-Bench with `final`; caches under `out_dir/cache/<cache_name>/`
    (the evaluation stage names it by benchmark and model fingerprint)."""
    check_inputs(cfg)
    questions, prompts, refs = load_inputs(cfg)
    cache = Path(out_dir) / "cache" / (cache_name or cfg.eval.name)
    answers, generation = generate_answers(cfg, Path(final), questions, cache / "answers.jsonl")
    judged = judge_answers(cfg, questions, answers, prompts, refs, cache / "judgments.jsonl")

    samples, rated, failures = [], [], {"turn1": 0, "turn2": 0}
    unrated = {"turn1": 0, "turn2": 0}
    served = set()
    for q in questions:
        qid = q["question_id"]
        sample = {
            "question_id": qid, "category": q["category"], "turns": q["turns"], "answers": answers[qid]["answers"],
            "prompts": answers[qid]["prompts"], "temperature": answers[qid]["temperature"],
            "judge_prompts": [], "ratings": [], "judge_replies": [],
        }
        for turn in (1, 2):
            record = judged[(qid, turn)]
            ratings = [r["rating"] for r in record["replies"]]
            parsed = [r for r in ratings if r is not None]
            median = statistics.median(parsed) if parsed else None
            failures[f"turn{turn}"] += len(ratings) - len(parsed)
            served.update(r["served_model"] for r in record["replies"])
            if median is None:
                unrated[f"turn{turn}"] += 1
            else:
                rated.append((q["category"], turn, median))
            sample["judge_prompts"].append(record["prompt_name"])
            sample["ratings"].append({"runs": ratings, "median": median})
            sample["judge_replies"].append([r["reply"] for r in record["replies"]])
        samples.append(sample)
    if not rated:
        raise RuntimeError(
            f"MT-Bench: no judge reply carried a rating ([[x]]); see {cache / 'judgments.jsonl'} "
            f"(judge {cfg.eval.judge.model} at {cfg.eval.judge.base_url})"
        )

    categories = sorted({c for c, _, _ in rated})
    scores = {
        "mean": _mean([r for _, _, r in rated]),
        "turn1": _mean([r for _, t, r in rated if t == 1]),
        "turn2": _mean([r for _, t, r in rated if t == 2]),
        "by_category": {c: _mean([r for cat, _, r in rated if cat == c]) for c in categories},
    }
    judge = cfg.eval.judge
    import openai

    if generation["prompt"] == "alpaca":
        prompt_format = {"turn1": ALPACA_PROMPT, "next_turn": "{previous prompt} {answer}" + ALPACA_NEXT_TURN}
    else:
        prompt_format = "tokenizer.apply_chat_template(conversation so far, add_generation_prompt=True)"
    return {  # aggc.evaluate adds benchmark, chat_template, backend, seed, packages and seconds
        "score": scores["mean"],
        "scorer": f"MT-Bench single-answer grading (FastChat llm_judge), judge {judge.model}: "
        "mean 1-10 rating over the rated turns",
        "scores": scores,
        "n": len(questions),
        "n_rated_turns": len(rated),
        "data": {key: str(Path(cfg.eval[key]).resolve()) for key in ("questions", "judge_prompts", "reference_answers")},
        "judge": {
            "model": str(judge.model),
            "served_models": sorted(m for m in served if m),  # the `model` field of the replies
            "base_url": str(judge.base_url),
            "api_key_env": judge.get("api_key_env"),
            "prompts": {f"turn{t}": [JUDGE_PROMPTS[False, t], JUDGE_PROMPTS[True, t]] for t in (1, 2)},
            "reference_categories": list(NEED_REF_CATS),
            "prompt_version": str(judge.prompt_version),
            "judge_prompts_sha256": hashlib.sha256(Path(cfg.eval.judge_prompts).read_bytes()).hexdigest(),
            "runs": judge.runs,
            "aggregate": "median of the parsed ratings",
            "temperature": float(judge.temperature),
            "max_tokens": judge.max_tokens,
            "client": f"openai {openai.__version__}",
        },
        "parse_failures": {
            **failures, "total": failures["turn1"] + failures["turn2"], "replies": 2 * len(questions) * judge.runs,
            "unrated_turns": {**unrated, "total": unrated["turn1"] + unrated["turn2"]},
        },
        "generation": generation,
        "prompt": generation["prompt"],
        "prompt_format": prompt_format,
        "config": OmegaConf.to_container(cfg.eval, resolve=True),
        "samples": samples,
    }
