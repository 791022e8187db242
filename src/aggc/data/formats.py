"""Prompt template and converters from each source dataset to one record form.

Every loader returns records `{"instruction", "output"}` (plus `answer` when
the source has a final numeric answer), so tokenization and evaluation never
need to know where the data came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import datasets

from aggc.data import arith

# The authors' template (PiSSA / Alpaca, no input field), verbatim.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)
ANSWER_MARKER = "The answer is: "
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_CALCULATOR = re.compile(r"<<[^>]*>>")


def format_prompt(instruction: str) -> str:
    return ALPACA_PROMPT.format(instruction=instruction)


def extract_answer(text: str) -> str | None:
    """The number after the last "The answer is: " (commas dropped), or None."""
    _, marker, tail = text.rpartition(ANSWER_MARKER)
    match = _NUMBER.match(tail.strip()) if marker else None
    return match.group(0).replace(",", "") if match else None


def _with_answer(instruction: str, output: str) -> dict:
    record = {"instruction": instruction, "output": output}
    answer = extract_answer(output)
    if answer is not None:
        record["answer"] = answer
    return record


def from_gsm8k(record: dict) -> dict:
    """GSM8K ends with "#### N" and carries <<a+b=c>> calculator notes; rewrite
    it the way MetaMathQA does so all math data ends with "The answer is: N"."""
    solution, _, final = record["answer"].rpartition("####")
    answer = final.strip().replace(",", "")
    steps = _CALCULATOR.sub("", solution).strip()
    return {"instruction": record["question"], "output": f"{steps}\n{ANSWER_MARKER}{answer}", "answer": answer}


def from_math(record: dict) -> dict:
    """MATH (Hendrycks; MATH-500 and the hub's train split share `problem` and `solution`):
    the gold answer is the record's `answer` (MATH-500) or else read from the solution by
    the evaluation's lenient extraction (its last \\boxed{}, as verl reads the train split);
    the solution is made to end "The answer is: A" as the other math data. None found ->
    no `answer` key."""
    from aggc.evaluate.scorers import math_flexible_answer  # not at the top: scorers imports this module

    answer = record.get("answer") or math_flexible_answer(record["solution"])
    if not answer:
        return {"instruction": record["problem"], "output": record["solution"]}
    return {"instruction": record["problem"], "output": f"{record['solution']}\n{ANSWER_MARKER}{answer}", "answer": answer}


def from_metamathqa(record: dict) -> dict:
    return _with_answer(record["query"], record["response"])


def from_pissa(record: dict) -> dict:
    return _with_answer(record["instruction"], record["output"])


def from_codefeedback(record: dict) -> dict:
    return {"instruction": record["query"], "output": record["answer"]}


def from_wizardlm(record: dict) -> dict:
    """First human turn and the gpt turn that answers it."""
    turns = record["conversations"]
    for i, turn in enumerate(turns[:-1]):
        if turn["from"] == "human" and turns[i + 1]["from"] == "gpt":
            return {"instruction": turn["value"], "output": turns[i + 1]["value"]}
    raise ValueError("wizardlm record has no human turn followed by a gpt turn")


def from_arith(record: dict) -> dict:
    return {"instruction": record["question"], "output": record["output"], "answer": record["answer"]}


CONVERTERS: dict[str, Callable[[dict], dict]] = {
    "arith": from_arith,
    "gsm8k": from_gsm8k,
    "math": from_math,
    "metamathqa": from_metamathqa,
    "pissa": from_pissa,
    "codefeedback": from_codefeedback,
    "wizardlm": from_wizardlm,
}


def convert(records, fmt: str, limit: int | None = None) -> list[dict]:
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown data.format {fmt!r}; expected one of {sorted(CONVERTERS)}")
    converter = CONVERTERS[fmt]
    out = []
    for record in records:
        if limit is not None and len(out) >= limit:
            break
        out.append(converter(record))
    return out


def _read_json_records(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def load_sft_records(spec: dict, split: str) -> list[dict]:
    """Records of the dataset described by `spec` (the `data` config group).

    `split` ("train" or "test") picks among generated arith splits; `jsonl` and
    `hub` specs already name one concrete file or hub split, so one spec is
    written per split and `split` is not consulted for them.
    """
    kind = spec.get("kind")
    if kind == "arith":
        sizes = {"train": spec["train_size"], "test": spec["eval_size"]}
        if split not in sizes:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return convert(arith.generate(sizes[split], spec["seed"], split), "arith")
    if kind == "jsonl":
        return convert(_read_json_records(Path(spec["path"])), spec["format"], spec.get("limit"))
    if kind == "hub":
        # `data_dir` is how the authors select a PiSSA sub-task (e.g. "metamath").
        dataset = datasets.load_dataset(
            spec["hub_id"], spec.get("subset"), data_dir=spec.get("data_dir"), split=spec["split"]
        )
        return convert(dataset, spec["format"], spec.get("limit"))
    raise ValueError(f"unknown data.kind {kind!r}; expected 'arith', 'jsonl' or 'hub'")
