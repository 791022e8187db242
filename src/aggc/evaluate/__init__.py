"""The evaluation stage: a run's final model in, `<run>/eval/<benchmark>.json` out.

Generation benchmarks (GSM8K, MATH, HumanEval, MBPP) go through lm-eval (`simple_evaluate`
with an in-process model and the task YAMLs under `evaluation/`); MT-Bench is FastChat's
answer -> judge -> score flow (`mt_bench.py`); GLUE tasks are dev-set predictions of the
run's classifier, scored with scikit-learn / scipy (`glue.py`). Generations are cached on
disk (lm-eval's request cache; MT-Bench's answer and judgment files), so a crashed
evaluation resumes where it stopped. Everything that can be wrong with the input fails
before a model is loaded.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError
from ..identity import digest, portable
from ..paths import ROOT
from ..train.rundir import (acquire, atomic_write_text, git_state, is_completed, model_fingerprint, package_versions,
                            release)
from .scorers import gsm8k_reference_correct

log = logging.getLogger(__name__)
EVALUATION_DIR = ROOT / "evaluation"
BACKENDS = ("hf", "vllm")
# Scorers applied after lm-eval to the raw response (`eval.reference`): the authors' own rules.
REFERENCE_SCORERS = {"gsm8k": gsm8k_reference_correct}
# Tasks whose generated code runs in `sandbox`: their results record its isolation.
CODE_TASKS = ("humaneval.yaml", "mbpp.yaml")


def choose_device(requested: str, cuda_available: bool) -> str:
    """Where the model is evaluated (`device`): `auto` is cuda where the node has a GPU, else
    cpu. A GPU asked for where none is visible is refused before anything loads, never a
    silent fallback (a 7B model's generation on CPU takes days)."""
    name = str(requested)
    if name == "auto":
        return "cuda" if cuda_available else "cpu"
    if name == "cpu":
        return name
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not cuda_available:
            raise ConfigError(f"device={name}: no GPU is visible here (torch.cuda.is_available() is false): run on a GPU "
                              "node, or set device=auto (the GPU where there is one) or device=cpu")
        return name
    raise ConfigError(f"device={name!r}: must be auto, cpu, cuda or cuda:<index>")


DTYPES = ("float32", "bfloat16")


def eval_dtype(cfg: DictConfig) -> str:
    """The evaluation's `dtype` (part of `eval_settings`: it changes generations, the device
    does not choose it)."""
    dtype = str(cfg.get("dtype", "float32"))
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
    return dtype


def eval_device(cfg: DictConfig) -> str:
    """`choose_device` for this machine."""
    import torch

    return choose_device(cfg.get("device", "auto"), torch.cuda.is_available())


def check_inputs(cfg: DictConfig) -> tuple[Path, Path]:
    """(run dir, final model dir); raises before anything is loaded."""
    run = Path(cfg.run)
    if not run.is_dir():
        raise FileNotFoundError(f"run={run}: no such run directory")
    final = run / "final"
    if not (final / "config.json").exists():
        raise FileNotFoundError(f"run={run}: no final model ({final}); is the training run COMPLETED?")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"backend={cfg.backend!r}: must be one of {', '.join(BACKENDS)}")
    if cfg.eval.kind == "mt_bench":
        from . import mt_bench

        mt_bench.check_inputs(cfg)
    elif cfg.eval.kind == "glue":
        from . import glue

        glue.check_inputs(cfg, run)
    elif cfg.eval.kind == "lm_eval":
        if cfg.eval.data == "hub":
            if not cfg.eval.get("hub") or not cfg.eval.hub.get("path"):
                raise ConfigError(f"eval={cfg.eval.name}: eval.data=hub needs eval.hub.path (and split)")
        elif cfg.eval.data != "arith" and not Path(cfg.eval.data).exists():
            raise FileNotFoundError(f"eval.data={cfg.eval.data}: no such data file")
        elif cfg.eval.data != "arith" and cfg.eval.get("reference") == "gsm8k":
            check_gsm8k_golds(Path(cfg.eval.data))
        if not (EVALUATION_DIR / cfg.eval.task).exists():
            raise FileNotFoundError(f"eval.task={cfg.eval.task}: no such task definition under {EVALUATION_DIR}")
    else:
        raise ConfigError(f"eval.kind={cfg.eval.kind!r}: must be lm_eval, mt_bench or glue")
    eval_device(cfg)  # a GPU asked for where there is none fails here, before the model loads
    eval_dtype(cfg)
    return run, final


def check_gsm8k_golds(path: Path) -> None:
    """The authors' GSM8K rule compares numbers: every record's gold (its `answer` after the
    last "####", as the task's target) must read as one, or the scoring fails after generation."""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            answer = json.loads(line).get("answer")
        except (ValueError, AttributeError):
            raise ConfigError(f"{path}:{n}: not a JSON object (one GSM8K record per line)") from None
        gold = answer.split("####")[-1].strip() if isinstance(answer, str) else answer
        try:
            float(gold.replace(",", ""))
        except (AttributeError, ValueError):
            raise ConfigError(f"{path}:{n}: the gold answer {gold!r} (after the last '####' of `answer`) is not a "
                              "number, which the authors' GSM8K rule compares") from None


def data_file(cfg: DictConfig, out_dir: Path) -> Path:
    """The benchmark's JSON-lines file; `arith` writes its held-out split in GSM8K's format,
    `hub` (the full MATH test) the hub's split in the fields of the shipped file."""
    if cfg.eval.data == "hub":
        return hub_file(cfg, out_dir)
    if cfg.eval.data != "arith":
        return Path(cfg.eval.data).resolve()
    from ..data import arith

    templates = cfg.eval.arith.get("templates")
    kinds = "" if templates is None else "-" + "-".join(templates)
    # every setting of the generator names the file: a cached file of another size is not this one
    path = out_dir / "data" / f"arith{kinds}_test_seed{cfg.eval.arith.seed}_n{cfg.eval.arith.eval_size}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = arith.generate(cfg.eval.arith.eval_size, cfg.eval.arith.seed, "test", templates)
        lines = [json.dumps({"question": r["question"], "answer": f"{r['output']}\n#### {r['answer']}"}) for r in rows]
        atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def hub_file(cfg: DictConfig, out_dir: Path) -> Path:
    """`eval.hub`'s split written once as JSON lines (`eval.hub.format`: `math`, MATH in
    MATH-500's fields), so the task file reads it as it reads the shipped data."""
    import datasets

    hub = cfg.eval.hub
    path = out_dir / "data" / f"{hub.path.replace('/', '--')}-{hub.split}.jsonl"
    if not path.exists():
        try:
            rows = datasets.load_dataset(hub.path, hub.get("name"), split=hub.split)
        except Exception as e:  # offline, or a gated / renamed dataset
            raise FileNotFoundError(f"eval={cfg.eval.name}: cannot load {hub.path} ({hub.split}) from the hub: {e}"
                                    + (" (offline: eval=math500 is the shipped MATH-500)" if cfg.eval.name == "math" else "")) from e
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in HUB_FORMATS[hub.format](rows)))
    return path


def math_records(rows) -> list[dict]:
    """Hendrycks MATH rows (problem, solution, level, type) in MATH-500's fields: the answer is
    the solution's last \\boxed{} (lm-eval's hendrycks_math extraction; it gives MATH-500's
    own `answer` for all 500 of its problems)."""
    from lm_eval.tasks.hendrycks_math.utils import last_boxed_only_string, remove_boxed

    return [{"problem": r["problem"], "solution": r["solution"], "answer": remove_boxed(last_boxed_only_string(r["solution"])),
             "subject": r["type"], "level": r["level"]} for r in rows]


HUB_FORMATS = {"math": math_records}


def task_config(cfg: DictConfig, data: Path) -> dict:
    """The task YAML (with its `!function` hooks resolved), pointed at `data`."""
    from lm_eval.tasks._yaml_loader import load_yaml

    task = load_yaml(EVALUATION_DIR / cfg.eval.task)
    task["dataset_kwargs"]["data_files"]["test"] = str(data)
    task["generation_kwargs"]["max_gen_toks"] = cfg.max_gen_toks
    return task


def load_backend(cfg: DictConfig, final: Path):
    if cfg.backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM  # optional extra, GPU only

        return VLLM(pretrained=str(final), batch_size="auto", seed=cfg.seed, dtype=eval_dtype(cfg))
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = eval_device(cfg)  # HFLM keeps a model object where it is: it goes to the device first
    model = AutoModelForCausalLM.from_pretrained(final, dtype=getattr(torch, eval_dtype(cfg)))
    tokenizer = AutoTokenizer.from_pretrained(final)
    return HFLM(pretrained=model.to(device), tokenizer=tokenizer, batch_size=cfg.batch_size)


# Eval kinds that generate `max_gen_toks` new tokens after a prompt, within the model's context.
GENERATING = ("lm_eval", "mt_bench")


def context_length(final: Path) -> int | None:
    """The model's context in tokens, from its config.json (None when it names none)."""
    try:
        config = json.loads((final / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def generation_tokens(cfg: DictConfig, run: Path) -> int:
    """`max_gen_toks`, clamped to half the model's context so a prompt still fits (the default
    1024 is the authors' 7B setting; `make train`'s tiny model has 256 positions, and
    generation past them fails after the model loads). Part of `eval_settings`, so a table
    expects the clamped value exactly as the evaluation records it."""
    context = context_length(run / "final") if cfg.eval.kind in GENERATING else None
    if context is not None and cfg.max_gen_toks > context // 2:
        return context // 2
    return cfg.max_gen_toks


def eval_settings(cfg: DictConfig, run: Path) -> dict:
    """Everything of the evaluation config that can change a score (`eval.limit` included);
    `chat_template: null` resolved as `evaluate` resolves it, from the run's config."""
    chat_template = cfg.chat_template
    if chat_template is None and (run / "config.yaml").exists():
        chat_template = bool(OmegaConf.load(run / "config.yaml").model.get("chat_template", False))
    return portable({"eval": OmegaConf.to_container(cfg.eval, resolve=True), "max_gen_toks": generation_tokens(cfg, run),
                     "chat_template": chat_template, "backend": cfg.backend, "seed": cfg.seed, "dtype": eval_dtype(cfg)})


def is_fresh(result_path: Path, run: Path, settings: dict) -> bool:
    """Whether a result scored the run's current model with these settings."""
    if not (result_path.exists() and is_completed(run)):
        return False
    result = json.loads(result_path.read_text())
    return result.get("model_fingerprint") == model_fingerprint(run) and result.get("eval_id") == digest(settings)


def evaluate(cfg: DictConfig) -> Path:
    """Evaluate `cfg.run`'s final model on `cfg.eval`; returns the result file. Holds the
    run's lock (no training or other evaluation of it meanwhile). A result that scored
    another model (the run was retrained) or other settings (`eval.limit`, ...) is redone."""
    run, final = check_inputs(cfg)
    if not is_completed(run):
        raise FileNotFoundError(f"run={run}: not COMPLETED; evaluate a finished run")
    path = run / "eval" / f"{cfg.eval.name}.json"
    if is_fresh(path, run, eval_settings(cfg, run)) and not cfg.force:
        return path  # done before, read only; `force=true` evaluates again (generations come from the cache)
    lock = acquire(run)
    try:
        return _evaluate(cfg, run, final)
    finally:
        release(lock, run)


def _evaluate(cfg: DictConfig, run: Path, final: Path) -> Path:
    settings = eval_settings(cfg, run)
    cfg.chat_template = settings["chat_template"]
    out_dir = run / "eval"
    path = out_dir / f"{cfg.eval.name}.json"
    if is_fresh(path, run, settings) and not cfg.force:
        return path  # evaluated meanwhile by the process that held the lock
    if settings["max_gen_toks"] != cfg.max_gen_toks:
        log.warning("max_gen_toks=%d does not fit the model's context of %d tokens (%s): generating at most %d, half "
                    "the context, leaving the rest for the prompt; pass max_gen_toks=<n> to choose", cfg.max_gen_toks,
                    context_length(final), final / "config.json", settings["max_gen_toks"])
        cfg.max_gen_toks = settings["max_gen_toks"]
    if path.exists() and not cfg.force:
        print(f"{path}: scored another model or other settings; evaluating again", flush=True)
    out_dir.mkdir(exist_ok=True)
    device = eval_device(cfg)
    log.info("evaluating %s on %s (device=%s)", final, device, cfg.get("device", "auto"))
    fingerprint = model_fingerprint(run)
    # generation caches are per model and dtype: a retrained model, or another dtype, gets no old answers
    cache_name = f"{cfg.eval.name}-{fingerprint}" + ("" if settings["dtype"] == "float32" else f"-{settings['dtype']}")
    started = time.time()
    if cfg.eval.kind == "mt_bench":
        from . import mt_bench

        result = mt_bench.evaluate_mt_bench(cfg, final, out_dir, cache_name)
    elif cfg.eval.kind == "glue":
        from . import glue

        result = glue.evaluate_glue(cfg, run, final)
    else:
        result = evaluate_lm_eval(cfg, final, out_dir, cache_name)
    record = {
        "benchmark": cfg.eval.name,
        **result,
        "model_fingerprint": fingerprint,
        "eval_id": digest(settings),
        "eval_settings": settings,
        **git_state(),
        "chat_template": bool(cfg.chat_template),
        "backend": cfg.backend,
        "device": device,
        "seed": cfg.seed,
        "packages": package_versions(),
        "seconds": round(time.time() - started, 2),
    }
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def evaluate_lm_eval(cfg: DictConfig, final: Path, out_dir: Path, cache_name: str | None = None) -> dict:
    """A generation benchmark through lm-eval; every scorer the eval config names, in percent."""
    data = data_file(cfg, out_dir)
    task = task_config(cfg, data)

    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = load_backend(cfg, final)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=[task], task_manager=TaskManager(include_defaults=False), log_samples=True, limit=cfg.eval.limit,
        use_cache=str(out_dir / "cache" / (cache_name or cfg.eval.name)), apply_chat_template=cfg.chat_template,
        random_seed=cfg.seed, numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
    )
    name = task["task"]
    metrics = [m["metric"] for m in task["metric_list"]]
    samples = per_sample(results["samples"][name], metrics, list(cfg.eval.sample_fields))
    scores = {score: 100 * float(results["results"][name][key]) for score, key in cfg.eval.scores.items()}
    if cfg.eval.get("reference"):
        correct = REFERENCE_SCORERS[cfg.eval.reference]
        for s in samples:
            s["reference_correct"] = correct(s["response"], s["target"])
        scores["reference"] = 100 * sum(s["reference_correct"] for s in samples) / len(samples)
    plus = None
    if cfg.eval.get("evalplus"):  # HumanEval+ / MBPP+ where evalplus and its data are available
        from .evalplus_scoring import plus_scores

        plus = plus_scores(cfg.eval.task, samples)
        if plus["used"]:
            scores["evalplus_base"], scores["evalplus_plus"] = plus["base"], plus["plus"]
    elif "evalplus" in cfg.eval:  # a code benchmark with evalplus off
        plus = {"used": False, "reason": "eval.evalplus=false (evalplus would run the code outside the bubblewrap sandbox): "
                                         "base tests only"}
    result = {
        "score": scores[cfg.eval.score],
        "scorer": cfg.eval.scorer,
        "scores": scores,
        "n": len(samples),
        "data": str(data),
        "generation": task["generation_kwargs"],
        "prompt": task["doc_to_text"],
        "samples": samples,
    }
    if plus is not None:
        result["evalplus"] = plus
    if cfg.eval.task in CODE_TASKS:
        from .sandbox import isolation

        result["isolation"] = isolation()  # bwrap | guard-only: how the code was contained (tables mark guard-only)
    return result


def per_sample(samples: list[dict], metrics: list[str], fields: list[str]) -> list[dict]:
    """One record per problem: the response, and each filter's extraction and verdicts."""
    by_doc: dict[int, dict] = {}
    for s in samples:
        entry = by_doc.setdefault(s["doc_id"], {
            "doc_id": s["doc_id"], **{f: s["doc"][f] for f in fields}, "target": s["target"], "response": s["resps"][0][0],
        })
        prefix = "" if s["filter"] == "none" else f"{s['filter']}_"
        if prefix:
            entry[f"{prefix}extracted"] = s["filtered_resps"][0]
        entry.update({f"{prefix}{m}": s[m] for m in metrics if m in s})
    return [by_doc[k] for k in sorted(by_doc)]
