"""The authors' GSM8K and MATH rules, quirks included (aggc-spec.md, evaluation protocol)."""

import pytest

from aggc.evaluate.scorers import (
    gsm8k_reference_answer,
    gsm8k_reference_correct,
    math_flexible_answer,
    math_reference_answer,
    math_reference_correct,
    math_scores,
    normalize_math,
)


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("so 18. The answer is: 18", 18),
        ("The answer is: 18.4 dollars", 18),            # rounded to an integer
        ("The answer is: 2.5", 2),                       # Python's round: half to even
        ("The answer is: 1,000 apples", 1000),           # comma removed
        ("The answer is: 3/4", 1),                       # fraction evaluated, then rounded
        ("The answer is: 7 ... wait. The answer is: 9", 9),  # the LAST marker
        ("The answer is 18", None),                      # no colon: no answer
        ("The answer is: none", None),
        ("The answer is: -5", -5),
    ],
)
def test_reference_extraction(completion, expected):
    assert gsm8k_reference_answer(completion) == expected


def test_reference_correct_compares_with_gold_number():
    assert gsm8k_reference_correct("The answer is: 18.4", "18")
    assert gsm8k_reference_correct("The answer is: 1,080", "1,080")
    assert not gsm8k_reference_correct("18", "18")


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("So x = 3.\nThe answer is: \\frac{14}{3}", "\\frac{14}{3}"),
        ("The answer is: 28.\nThen more text", "28"),            # cut at the first ".\n"
        ("The answer is: 5 and 7.", "5 and 7"),                   # one trailing "." dropped
        ("The answer is: 1. The answer is: 2", "2"),              # the LAST marker
        ("The answer is \\boxed{2}", None),                       # no colon: no answer
    ],
)
def test_math_reference_extraction(completion, expected):
    assert math_reference_answer(completion) == expected


@pytest.mark.parametrize(
    "text, normal",
    [
        ("\\dfrac{14}{3}", "\\frac{14}{3}"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("90^\\circ", "90"),
        ("\\$18", "18"),
        ("50\\%", "50"),
        ("12\\text{ cm}", "12"),
        ("0.5", "\\frac{1}{2}"),
        (".5", "\\frac{1}{2}"),
        ("3/4", "\\frac{3}{4}"),
        ("x = 5", "5"),                                             # a short "x =" prefix
        ("\\sqrt2", "\\sqrt{2}"),
        ("\\boxed{5}", "\\boxed{5}"),                             # \boxed is NOT removed
    ],
)
def test_hendrycks_normalisation(text, normal):
    assert normalize_math(text) == normal


def test_math_reference_compares_after_normalisation():
    assert math_reference_correct("The answer is: \\dfrac{14}{3}", "\\frac{14}{3}")
    assert math_reference_correct("The answer is: 14/3.", "\\frac{14}{3}")
    assert not math_reference_correct("The answer is: \\boxed{28}", "28")   # the authors' quirk
    assert not math_reference_correct("\\boxed{28}", "28")
    # Two units make the normaliser fail; the authors then compare the raw strings.
    assert math_reference_correct("The answer is: 1\\text{ m}\\text{ s}", "1\\text{ m}\\text{ s}")


def test_math_three_scorers_disagree_where_they_should():
    """strict is verbatim, flexible finds \\boxed{} and normalises, reference is the authors'."""
    assert math_scores("The answer is: \\dfrac{14}{3}", "\\frac{14}{3}") == {"strict": 0.0, "flexible": 1.0, "reference": 1.0}
    assert math_scores("so \\boxed{28}.", "28") == {"strict": 0.0, "flexible": 1.0, "reference": 0.0}
    assert math_scores("The answer is: 28", "28") == {"strict": 1.0, "flexible": 1.0, "reference": 1.0}
    assert math_flexible_answer("the final answer is 2000.") == "2000"
