"""The authors' own scoring rules (PiSSA's `utils/test_acc.py`, from MetaMath; MATH with
Hendrycks' normalisation), quirks kept.

lm-eval's strict / flexible extraction is reported beside these; each result file says
which scorer produced which number.

Every scorer here takes any completion and returns a verdict, never an exception: they
score a whole benchmark after generation and are GRPO's reward during training, where one
odd completion must cost one sample, not the run. Where the authors' code raises (GSM8K
"7/00", a number too large for a float), the verdict is written down beside the rule.
Only `normalize_math` raises, as Hendrycks' does; `math_equivalent` turns that into their
raw-string comparison. (GSM8K golds must be numbers, as the datasets write them;
`aggc.evaluate.check_gsm8k_golds` refuses a file with another before generation.)
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from ..data.formats import ANSWER_MARKER

_NUMBER = re.compile(r"[\-+]?\d*[\.,/]?\d+")


def gsm8k_reference_answer(completion: str) -> int | None:
    """The number after the LAST "The answer is: " (none -> None): the first number
    there (one '.', ',' or '/' allowed), commas removed, fractions evaluated, then
    ROUNDED to an integer (Python's round: 18.4 -> 18, 2.5 -> 2).

    Where the authors' code raises, the verdict is ours: a zero denominator reads as the
    numerator (their rule for "7/0", extended to "7/00", a ZeroDivisionError for them); a
    value beyond a float's range, or a fraction with a side longer than Python's 4300-digit
    int limit, reads as no answer (they return None for +inf and raise on -inf and on such
    fractions)."""
    parts = completion.split(ANSWER_MARKER)
    if len(parts) < 2:
        return None
    match = _NUMBER.search(parts[-1].strip())
    if not match:
        return None
    numerator, slash, denominator = match.group().replace(",", "").partition("/")
    if slash and not (_is_number(numerator) and _is_number(denominator)):
        return None
    try:
        value = float(Fraction(int(numerator), int(denominator))) if slash and float(denominator) else float(numerator)
    except (OverflowError, ValueError):  # a float overflow; int() past its digit limit
        return None
    return round(value) if math.isfinite(value) else None


def gsm8k_reference_correct(completion: str, gold: str) -> bool:
    predicted = gsm8k_reference_answer(completion)
    return predicted is not None and float(predicted) == float(gold.replace(",", ""))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- MATH: the text after the last marker, compared after Hendrycks' normalisation ---------

def math_reference_answer(completion: str) -> str | None:
    """The text after the LAST "The answer is: " up to the first ".\\n", stripped, one
    trailing "." dropped (none -> None). `\\boxed{}` is kept, as the authors' rule does."""
    parts = completion.split(ANSWER_MARKER)
    if len(parts) < 2:
        return None
    answer = parts[-1].split(".\n")[0].strip()
    return answer[:-1].strip() if answer.endswith(".") else answer


def math_reference_correct(completion: str, gold: str) -> bool:
    predicted = math_reference_answer(completion)
    return predicted is not None and math_equivalent(predicted, gold)


def math_equivalent(predicted: str, gold: str) -> bool:
    """Equal after `normalize_math`; when the normaliser raises on either string, the raw
    strings are compared (Hendrycks' `is_equiv`, which catches every exception)."""
    try:
        return normalize_math(predicted) == normalize_math(gold)
    except Exception:  # the authors' rule: any failure means "compare raw"
        return predicted == gold


def normalize_math(text: str) -> str:
    """Hendrycks et al.'s MATH string normalisation (`_strip_string`), step for step."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = text.replace("\\$", "")
    text = _remove_right_units(text)
    text = text.replace("\\%", "").replace("\\%", "")  # twice, as theirs: \\%% -> \% -> (empty)
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # a short "k = " prefix
        text = sides[1]
    text = _fix_sqrt(text).replace(" ", "")
    text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


def _remove_right_units(text: str) -> str:
    if "\\text{ " not in text:
        return text
    splits = text.split("\\text{ ")
    assert len(splits) == 2  # more than one unit: the caller compares raw strings
    return splits[0]


def _fix_sqrt(text: str) -> str:
    """\\sqrt3 -> \\sqrt{3}."""
    head, *rest = text.split("\\sqrt")
    return head + "".join("\\sqrt" + (part if part[0] == "{" else "{" + part[0] + "}" + part[1:]) for part in rest)


def _fix_fracs(text: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}; a too-short \\frac leaves the text as it was."""
    head, *rest = text.split("\\frac")
    out = head
    for part in rest:
        out += "\\frac"
        if part[0] == "{":
            out += part
            continue
        if len(part) < 2:
            return text
        a, b, tail = part[0], part[1], part[2:]
        out += "{" + a + "}" + ("{" + b + "}" if b != "{" else b) + tail
    return out


def _fix_a_slash_b(text: str) -> str:
    """"3/4" -> \\frac{3}{4} when both sides are plain integers. A side that is no integer
    raises ValueError, so `math_equivalent` compares the raw strings: the authors' code
    catches only the assertion here, so "\\pi / 2" does not equal "\\pi/2"."""
    sides = text.split("/")
    if len(sides) != 2:
        return text
    a, b = int(sides[0]), int(sides[1])
    return f"\\frac{{{a}}}{{{b}}}" if text == f"{a}/{b}" else text


def math_flexible_answer(completion: str) -> str | None:
    """A lenient extraction: the last `\\boxed{...}`, else the text after the last
    "answer is" (any case, colon optional), cut like the reference rule."""
    start = completion.rfind("\\boxed{")
    if start >= 0:
        depth = 0
        for end in range(start + len("\\boxed"), len(completion)):
            depth += {"{": 1, "}": -1}.get(completion[end], 0)
            if depth == 0:
                return completion[start + len("\\boxed{"):end]
    match = list(re.finditer(r"answer is:?", completion, flags=re.IGNORECASE))
    if not match:
        return None
    answer = completion[match[-1].end():].split(".\n")[0].strip()
    return answer[:-1].strip() if answer.endswith(".") else answer


def math_scores(completion: str, gold: str) -> dict[str, float]:
    """strict: the reference extraction compared verbatim; flexible: lenient extraction,
    normalised; reference: the authors' rule."""
    strict, flexible = math_reference_answer(completion), math_flexible_answer(completion)
    return {
        "strict": float(strict is not None and strict == gold.strip()),
        "flexible": float(flexible is not None and math_equivalent(flexible, gold)),
        "reference": float(math_reference_correct(completion, gold)),
    }


# --- verl's rules: Table 5's reward and score (the authors trained GRPO with verl) ---------
# The paper does not show its RLVR prompts or reward; these follow verl's GSM8K and MATH
# examples (verl-project/verl: verl/utils/reward_score/gsm8k.py, math_reward.py; prompts in
# examples/data_preprocess/gsm8k.py, math_dataset.py), re-implemented here.

_VERL_GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")


def verl_gsm8k_answer(completion: str) -> str | None:
    """verl's GSM8K extraction (`extract_solution`, method "strict", its default): the text
    matched right after the LAST "#### " (one space), commas and "$" removed, kept as text:
    no rounding, so "18.0" is not "18". None when no "#### <number>" is written. As read in
    verl-project/verl at 092781d; some verl versions first cut the completion to its last
    300 characters (`_SOLUTION_CLIP_CHARS`, for speed), which this does not."""
    found = _VERL_GSM8K_STRICT.findall(completion)
    return found[-1].replace(",", "").replace("$", "") if found else None


def verl_gsm8k_flexible_answer(completion: str) -> str | None:
    """verl's GSM8K extraction, method "flexible" (a diagnostic beside the reward): the last
    run of digits, "-", "." and "," other than a lone "." (kept as written, commas too); when
    every run is a lone ".", that "." (verl's loop variable after the loop); None without any."""
    found = re.findall(r"(\-?[0-9\.\,]+)", completion)
    return next((f for f in reversed(found) if f not in ("", ".")), found[0] if found else None)


def verl_gsm8k_reward(completion: str, gold: str) -> float:
    """verl's GSM8K `compute_score` with its defaults (strict, format_score 0.0, score 1.0):
    1.0 when the extraction equals the ground truth as a string, else 0.0. The ground truth
    loses its commas, as verl's preprocessing writes it."""
    return float(verl_gsm8k_answer(completion) == gold.strip().replace(",", ""))


def verl_math_answer(completion: str) -> str | None:
    """verl's MATH extraction (`last_boxed_only_string`, then `remove_boxed`): the content of
    the last balanced `\\boxed{...}`, or what follows the last "\\boxed " up to a "$". None
    where verl finds no box, the box is unclosed, or `remove_boxed`'s assertions fail (an
    `\\fbox{}`: verl's reward is then 0)."""
    if "\\boxed " in completion:
        return completion.split("\\boxed ")[-1].split("$")[0]
    start = completion.rfind("\\boxed")
    if start < 0:
        return None  # verl falls back to the last \fbox, which remove_boxed then rejects
    depth = 0
    for end in range(start, len(completion)):
        depth += {"{": 1, "}": -1}.get(completion[end], 0)
        if completion[end] == "}" and depth == 0:
            boxed = completion[start:end + 1]
            return boxed[len("\\boxed{"):-1] if boxed.startswith("\\boxed{") else None
    return None


def verl_math_reward(completion: str, gold: str) -> float:
    """verl's MATH `compute_score`: 1.0 when the last boxed answer `is_equiv` to the ground
    truth (both through `verl_strip_string`; the raw strings compared when that raises)."""
    predicted = verl_math_answer(completion)
    if predicted is None:
        return 0.0
    try:
        return float(verl_strip_string(predicted) == verl_strip_string(gold))
    except Exception:  # verl's is_equiv: any failure means "compare raw"
        return float(predicted == gold)


def verl_strip_string(text: str) -> str:
    """verl's `strip_string` (lm-eval's hendrycks_math normalisation), step for step. It
    differs from `normalize_math` in two places: "\\\\%" is removed before "\\%", and an
    "a/b" whose sides are no integers is left as it is (verl's `fix_a_slash_b` catches every
    exception) instead of failing the comparison into raw strings."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = text.replace("\\$", "")
    text = _remove_right_units(text)
    text = text.replace("\\\\%", "").replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]
    text = _fix_sqrt(text).replace(" ", "")
    text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    try:
        return _fix_a_slash_b(text)
    except ValueError:
        return text
