"""Synthetic GSM8K-style arithmetic word problems.

A tiny model cannot learn GSM8K on a CPU, but it can partly learn these: the
problems share GSM8K's shape (word problem -> worked steps -> "The answer is: N"
as in MetaMathQA), so the whole SFT/eval pipeline runs end to end on a laptop
and different fine-tuning strategies give measurably different accuracies.
"""

from __future__ import annotations

import hashlib
import random

SPLITS = ("train", "test", "pretrain")

# Every question text is owned by exactly one split, decided by its hash and
# independent of the seed, so splits stay disjoint for any seeds.
_BUCKETS = {"test": range(0, 2), "train": range(2, 5), "pretrain": range(5, 10)}

_PEOPLE = [
    ("Tom", "he"),
    ("Anna", "she"),
    ("Ben", "he"),
    ("Lily", "she"),
    ("Sam", "he"),
    ("Mia", "she"),
    ("Jack", "he"),
    ("Emma", "she"),
    ("Leo", "he"),
    ("Zoe", "she"),
]
_ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells"]


def _add(rng: random.Random, name: str, he: str, items: str) -> tuple[str, list[str], int]:
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    question = f"{name} has {a} {items}. {he.capitalize()} buys {b} more. How many {items} does {he} have now?"
    return question, [f"{a} + {b} = {a + b}"], a + b


def _subtract(rng: random.Random, name: str, he: str, items: str) -> tuple[str, list[str], int]:
    a = rng.randint(5, 30)
    b = rng.randint(1, a - 1)
    question = (
        f"{name} has {a} {items}. {he.capitalize()} gives away {b} of them. How many {items} does {he} have left?"
    )
    return question, [f"{a} - {b} = {a - b}"], a - b


def _multiply(rng: random.Random, name: str, he: str, items: str) -> tuple[str, list[str], int]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    question = f"{name} has {a} bags with {b} {items} in each bag. How many {items} does {he} have in total?"
    return question, [f"{a} * {b} = {a * b}"], a * b


def _two_step(rng: random.Random, name: str, he: str, items: str) -> tuple[str, list[str], int]:
    a, b = rng.randint(5, 20), rng.randint(1, 10)
    c = rng.randint(1, a + b - 1)
    question = (
        f"{name} has {a} {items}. {he.capitalize()} buys {b} more and gives away {c}. "
        f"How many {items} does {he} have now?"
    )
    return question, [f"{a} + {b} = {a + b}", f"{a + b} - {c} = {a + b - c}"], a + b - c


TEMPLATES = {"add": _add, "subtract": _subtract, "multiply": _multiply, "two_step": _two_step}


def split_of(question: str) -> str:
    """The split that owns this question text (seed independent)."""
    bucket = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 10
    return next(split for split, buckets in _BUCKETS.items() if bucket in buckets)


def generate(n: int, seed: int, split: str, templates: list[str] | None = None) -> list[dict]:
    """`n` distinct problems of `split`, identical for identical (n, seed, split, templates);
    `templates` (names in TEMPLATES; default all) limits the kinds of problem.

    Records have `question`, `output` (steps ending "The answer is: N") and
    `answer` (N as str).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kinds = tuple(TEMPLATES.values()) if templates is None else tuple(TEMPLATES[t] for t in check_templates(templates))
    rng = random.Random(f"aggc-arith-{seed}-{split}")
    seen: set[str] = set()
    records = []
    for _ in range(100 * n + 1000):
        if len(records) == n:
            break
        name, he = rng.choice(_PEOPLE)
        question, steps, answer = rng.choice(kinds)(rng, name, he, rng.choice(_ITEMS))
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        output = "\n".join([*steps, f"The answer is: {answer}"])
        records.append({"question": question, "output": output, "answer": str(answer)})
    if len(records) < n:
        raise ValueError(f"could only generate {len(records)} distinct {split} problems, asked for {n}")
    return records


def check_templates(templates) -> list[str]:
    """`templates` as a list of known, distinct template names (a ValueError names the known ones)."""
    if isinstance(templates, str):  # list() would read a bare name as its letters
        raise ValueError(f"arith templates {templates!r}: a list ([{templates}]) of distinct names among {', '.join(TEMPLATES)}")
    names = list(templates)
    unknown = [t for t in names if t not in TEMPLATES]
    if not names or unknown or len(set(names)) < len(names):
        raise ValueError(f"arith templates {names}: a non-empty list of distinct names among {', '.join(TEMPLATES)}")
    return names
