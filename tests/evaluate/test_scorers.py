"""The authors' GSM8K rule, quirks included (aggc-spec.md, evaluation protocol)."""

import pytest

from aggc.evaluate.scorers import gsm8k_reference_answer, gsm8k_reference_correct


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
