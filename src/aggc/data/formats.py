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

from aggc.config import ConfigError
from aggc.data import arith

# The authors' template (PiSSA / Alpaca, no input field), verbatim.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)
ANSWER_MARKER = "The answer is: "
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_CALCULATOR = re.compile(r"<<[^>]*>>")


class DataError(ConfigError):
    """A data file or record that cannot train: the message names the file, the line and the
    field, and it is raised before any model is built (Hydra prints it without a traceback)."""


# verl's example prompts (Table 5's RLVR; the paper does not show its prompts): the question, a
# space, then the data's instruction, as the user turn of the chat template
# (verl-project/verl: examples/data_preprocess/gsm8k.py and math_dataset.py).
VERL_INSTRUCTIONS = {
    "gsm8k": 'Let\'s think step by step and output the final answer after "####".',
    "math": "Let's think step by step and output the final answer within \\boxed{}.",
}


def format_prompt(instruction: str) -> str:
    return ALPACA_PROMPT.format(instruction=instruction)


def verl_prompt(question: str, kind: str) -> str:
    """verl's example prompt for a `gsm8k` (answer after "####") or `math` (in \\boxed{}) question."""
    return f"{question} {VERL_INSTRUCTIONS[kind]}"


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
    solution, marker, final = record["answer"].rpartition("####")
    answer = final.strip().replace(",", "")
    if not marker or not _NUMBER.fullmatch(answer):
        raise ValueError("field 'answer' must end with GSM8K's final answer line '#### <number>', "
                         f"got {record['answer'][-60:]!r}")
    steps = _CALCULATOR.sub("", solution).strip()
    return {"instruction": record["question"], "output": f"{steps}\n{ANSWER_MARKER}{answer}", "answer": answer}


def from_math(record: dict) -> dict:
    """MATH (Hendrycks; MATH-500 and the hub's train split share `problem` and `solution`):
    the gold answer is the record's `answer` (MATH-500) or else the solution's last boxed
    answer as verl's MATH preprocessing and eval=math read it (`verl_math_answer`: "\\boxed "
    without braces too; an \\fbox, no box or an empty one give none), so the reward's gold is
    the evaluation's; the solution is made to end "The answer is: A" as the other math data.
    None found -> no `answer` key (GRPO skips the record)."""
    from aggc.evaluate.scorers import verl_math_answer  # not at the top: scorers imports this module

    answer = record.get("answer") or verl_math_answer(record["solution"])
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


# The fields each source format reads from a record (its converter's inputs).
REQUIRED_FIELDS = {
    "arith": ("question", "output", "answer"),
    "gsm8k": ("question", "answer"),
    "math": ("problem", "solution"),
    "metamathqa": ("query", "response"),
    "pissa": ("instruction", "output"),
    "codefeedback": ("query", "answer"),
    "wizardlm": ("conversations",),
}
FIELD_TYPES = {"conversations": list}   # the JSON type of a required field other than a string


def convert(records, fmt: str, limit: int | None = None, source: str = "data", where=None) -> list[dict]:
    """Records of source format `fmt` as `{instruction, output[, answer]}`. A record that is not
    one (a missing field, a GSM8K answer without '####') raises `DataError` naming
    `source`, the record's place (`where(i)`: ":<line>"; else its index) and the field."""
    if fmt not in CONVERTERS:
        raise ConfigError(f"data.format={fmt!r}: must be one of {', '.join(sorted(CONVERTERS))}")
    converter, required = CONVERTERS[fmt], REQUIRED_FIELDS[fmt]
    out = []
    for i, record in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        place = where(i) if where else f", record {i + 1}"
        if not isinstance(record, dict):
            raise DataError(f"{source}{place}: expected a JSON object with fields {', '.join(required)}, got {type(record).__name__}")
        missing = [f for f in required if record.get(f) is None]
        if missing:
            raise DataError(f"{source}{place}: field {missing[0]!r} missing (data.format={fmt} reads {', '.join(required)}; "
                            f"the record has {', '.join(record) or 'no fields'})")
        for field in required:  # a number where text belongs would train as a non-string, or crash after the model is built
            kind = FIELD_TYPES.get(field, str)
            if not isinstance(record[field], kind):
                raise DataError(f"{source}{place}: field {field!r} must be a JSON {'array' if kind is list else 'string'}, "
                                f"got {type(record[field]).__name__} {str(record[field])[:40]!r} (data.format={fmt})")
        try:
            out.append(converter(record))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{source}{place}: {err} (data.format={fmt})") from err
    if not out:
        raise DataError(f"{source}: no records (data.format={fmt}): an empty data file or split cannot train")
    return out


def _read_json_records(path: Path) -> tuple[list, list[int]]:
    """The records of a .json (one list) or .jsonl file and the line each starts on; a line
    that is not JSON raises `DataError` with its file and line."""
    if not path.is_file():
        raise DataError(f"data.path={path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark (as some editors write) is not part of the JSON
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({err.reason} at byte {err.start}); JSON data files are UTF-8") from None
    if path.suffix == ".json":
        try:
            records = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(records, list):
            raise DataError(f"{path}: a .json data file holds one list of records, got {type(records).__name__}")
        return records, []
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg}, column {err.colno}); a .jsonl file holds "
                            "one JSON object per line") from None
        lines.append(number)
    return records, lines


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
        return convert(arith.generate(sizes[split], spec["seed"], split, spec.get("templates")), "arith")
    if kind == "jsonl":
        path = Path(spec["path"])
        records, lines = _read_json_records(path)
        where = (lambda i: f":{lines[i]}") if lines else None
        return convert(records, spec["format"], spec.get("limit"), source=str(path), where=where)
    if kind == "hub":
        import datasets  # here: reading a local file needs no `datasets` (the compose-time check reads it, aggc.cli)

        # `data_dir` is how the authors select a PiSSA sub-task (e.g. "metamath").
        dataset = datasets.load_dataset(
            spec["hub_id"], spec.get("subset"), data_dir=spec.get("data_dir"), split=spec["split"]
        )
        return convert(dataset, spec["format"], spec.get("limit"), source=f"{spec['hub_id']} split {spec['split']}")
    raise ValueError(f"unknown data.kind {kind!r}; expected 'arith', 'jsonl' or 'hub'")
