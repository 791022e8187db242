"""The authors' own scoring rules (PiSSA's `utils/test_acc.py`, from MetaMath), quirks kept.

lm-eval's strict / flexible extraction is reported beside these; each result file says
which scorer produced which number.
"""

from __future__ import annotations

import re
from fractions import Fraction

from ..data.formats import ANSWER_MARKER

_NUMBER = re.compile(r"[\-+]?\d*[\.,/]?\d+")


def gsm8k_reference_answer(completion: str) -> int | None:
    """The number after the LAST "The answer is: " (none -> None): the first number
    there (one '.', ',' or '/' allowed), commas removed, fractions evaluated, then
    ROUNDED to an integer (Python's round: 18.4 -> 18, 2.5 -> 2)."""
    parts = completion.split(ANSWER_MARKER)
    if len(parts) < 2:
        return None
    match = _NUMBER.search(parts[-1].strip())
    if not match:
        return None
    text = match.group()
    if "/" in text:
        numerator, denominator = text.split("/")
        if not (_is_number(numerator) and _is_number(denominator)):
            return None
        if denominator == "0":
            return round(float(numerator.replace(",", "")))
        return round(float(Fraction(text.replace(",", ""))))
    value = float(text.replace(",", ""))
    return None if value == float("inf") else round(value)


def gsm8k_reference_correct(completion: str, gold: str) -> bool:
    predicted = gsm8k_reference_answer(completion)
    return predicted is not None and float(predicted) == float(gold.replace(",", ""))


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True
