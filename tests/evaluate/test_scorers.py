"""The authors' GSM8K and MATH rules, quirks included (aggc-spec.md, evaluation protocol),
and every scorer and reward of the project taking any string without raising (property
tests over arbitrary and adversarial completions)."""

import json
import math
import re
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggc.data.formats import ANSWER_MARKER as MARKER
from aggc.evaluate.scorers import (
    gsm8k_reference_answer,
    gsm8k_reference_correct,
    math_equivalent,
    math_flexible_answer,
    math_reference_answer,
    math_reference_correct,
    math_scores,
    normalize_math,
    verl_gsm8k_answer,
    verl_gsm8k_flexible_answer,
    verl_gsm8k_reward,
    verl_math_answer,
    verl_math_reward,
    verl_strip_string,
)
from aggc.paths import ROOT


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
        ("The answer is: 7/0", 7),                       # the authors' zero-denominator rule: the numerator
        # Where the authors' code raises, ours gives a verdict:
        ("The answer is: 7/00", 7),                      # theirs: ZeroDivisionError
        ("The answer is: " + "9" * 400, None),           # +inf: theirs too
        ("The answer is: -" + "9" * 400, None),          # -inf: theirs OverflowError
        ("The answer is: " + "9" * 400 + "/3", None),    # theirs: OverflowError
        ("The answer is: 1/" + "7" * 5000, None),        # past int's digit limit; theirs: ValueError
        ("The answer is: " + "3" * 400 + "/" + "3" * 400, 1),  # huge sides, small value: fine
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
        ("\\\\\\%%", ""),           # \\\%% -> \\%% -> \% -> "": \% removed twice, as the authors do
    ],
)
def test_hendrycks_normalisation(text, normal):
    assert normalize_math(text) == normal


def test_a_slash_b_with_a_side_no_integer_compares_raw_strings_as_the_authors_do():
    """Their `_fix_a_slash_b` catches only its assertion; int("\\pi") raises ValueError, which
    `is_equiv` catches by comparing the raw strings. So a spaced-out "\\pi / 2" is wrong
    against "\\pi/2" (normalised, both would read "\\pi/2"), and right against itself."""
    assert not math_equivalent("\\pi / 2", "\\pi/2")
    assert not math_reference_correct("The answer is: \\pi / 2", "\\pi/2")
    assert math_reference_correct("The answer is: \\pi/2", "\\pi/2")
    assert math_equivalent("3 / 4", "\\frac{3}{4}")        # integer sides: a/b -> \frac{a}{b}


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


# --- Table 5: verl's GSM8K and MATH rules (verl/utils/reward_score/gsm8k.py, math_reward.py) ---

@pytest.mark.parametrize(
    "completion, gold, reward",
    [
        ("48 / 2 = 24 clips in May.\n48 + 24 = 72\n#### 72", "72", 1.0),
        ("#### 1,080", "1080", 1.0),                   # commas removed from the answer
        ("#### 1080", "1,080", 1.0),                   # and from the ground truth (verl's preprocessing)
        ("#### 5\nwait\n#### 7", "7", 1.0),           # the LAST "#### "
        ("#### -3", "-3", 1.0),
        ("#### 72.", "72", 0.0),                       # the period is part of the number: "72." != "72"
        ("#### 18.0", "18", 0.0),                      # compared as text, no rounding
        ("####72", "72", 0.0),                         # one space after the marker is the format
        ("#### $72", "72", 0.0),                       # "$" before the number: no match
        ("The answer is: 72", "72", 0.0),              # the SFT format earns nothing here
        ("So the total is 72", "72", 0.0),             # strict: the last number alone is not an answer
    ],
)
def test_verl_gsm8k_reward_on_verls_format(completion, gold, reward):
    assert verl_gsm8k_reward(completion, gold) == reward


def test_verl_gsm8k_flexible_reads_the_last_number_as_written():
    assert verl_gsm8k_flexible_answer("3 + 4 = 7 apples") == "7"
    assert verl_gsm8k_flexible_answer("so 1,080.") == "1,080."
    assert verl_gsm8k_flexible_answer("no digits") is None


@pytest.mark.parametrize(
    "completion, gold, reward",
    [
        ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\dfrac12}", "\\frac{1}{2}", 1.0),        # verl's strip_string: dfrac, \frac12
        ("\\boxed{0.5}", "\\frac12", 1.0),
        ("\\boxed{5 \\text{ cm}}", "5", 1.0),                 # units on the right removed
        ("\\boxed{\\pi / 2}", "\\pi/2", 1.0),                # a/b with a non-integer side: kept, spaces gone
        ("\\boxed{1} no, \\boxed{2}", "2", 1.0),               # the LAST box
        ("\\boxed 5$ and more", "5", 1.0),                    # "\\boxed " up to the next "$"
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}", 1.0),           # nested braces balanced
        ("\\fbox{2}", "2", 0.0),                              # verl finds it, remove_boxed rejects it
        ("\\boxed{2", "2", 0.0),                              # unclosed
        ("The answer is: 2", "2", 0.0),                        # no box
        ("\\boxed{3}", "2", 0.0),
    ],
)
def test_verl_math_reward_on_verls_format(completion, gold, reward):
    assert verl_math_reward(completion, gold) == reward


def test_verl_normalisation_differs_from_the_sft_rules_where_verl_does():
    """a/b with a non-integer side: verl keeps the text (normalised), the SFT rule compares raw."""
    assert verl_strip_string("\\pi / 2") == "\\pi/2" and not math_equivalent("\\pi / 2", "\\pi/2")
    assert verl_strip_string("\\\\\\%") == ""   # "\\\\%" removed before "\\%" (after "\\\\" -> "\\")


# --- any string in, a verdict out: every scorer and reward ----------------------------------
# Completions are arbitrary text, or text built from the pieces scorers trip on: the answer
# marker, fractions with zero denominators, numbers far beyond a float, braces nested or left
# open, \boxed{ unbalanced, the normaliser's LaTeX, and unicode digits and surrogates.

PIECES = st.one_of(
    st.just(MARKER),
    st.builds("{}/{}".format, st.integers(-10**6, 10**6), st.integers(1, 4).map("0".__mul__)),
    st.builds("{}{}{}".format, st.sampled_from(["", "-", "+"]), st.integers(300, 5000).map("9".__mul__),
              st.sampled_from(["", "/3", "/0", "/00", ".5", "/" + "7" * 4400])),
    st.integers(1, 40).map(lambda n: "{" * n), st.integers(1, 40).map(lambda n: "}" * n),
    st.integers(1, 8).map(lambda n: "\\frac{" * n + "1" + "}" * (n - 1)),
    st.sampled_from(["\\boxed{", "\\boxed{{", "\\boxed{\\frac{1}{2}", "\\boxed}", "\\boxed"]),
    st.sampled_from(["\\frac", "\\dfrac", "\\sqrt", "\\text{ ", "\\left(", "\\right)", "^\\circ", "\\%", "\\$",
                     "\\\\", "\\pi", "=", "/", ".", ",", ".\n", " ", "\n", "answer is", "[[", "]]", "```python\n"]),
    st.sampled_from(["\u0663", "\U0001d7d7", "\u00b2", "\u00bd", "\u0000", "\ud800", "\ufeff", "\u202e"]),
    st.text(max_size=8),
)
COMPLETIONS = st.one_of(st.text(), st.lists(PIECES, max_size=12).map("".join))
GOLD_NUMBERS = st.one_of(st.integers(-10**9, 10**9).map(str), st.just("1,080"), st.just("0.5"))
FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
VERDICT = (0.0, 1.0)


@FAST
@given(COMPLETIONS, GOLD_NUMBERS)
def test_gsm8k_rule_gives_a_verdict_for_any_completion(completion, gold):
    answer = gsm8k_reference_answer(completion)
    assert answer is None or isinstance(answer, int)
    assert gsm8k_reference_correct(completion, gold) in (True, False)


@FAST
@given(COMPLETIONS, COMPLETIONS)
def test_math_scorers_give_a_verdict_for_any_completion_and_gold(completion, gold):
    """Golds are LaTeX too, so they are drawn like completions."""
    for extracted in (math_reference_answer(completion), math_flexible_answer(completion)):
        assert extracted is None or isinstance(extracted, str)
    scores = math_scores(completion, gold)
    assert set(scores) == {"strict", "flexible", "reference"} and set(scores.values()) <= set(VERDICT)
    assert math_equivalent(completion, gold) in (True, False)


@FAST
@given(st.text().filter(lambda t: MARKER not in t), st.integers(-10**12, 10**12))
def test_gsm8k_rule_reads_any_integer_after_the_marker(prefix, number):
    assert gsm8k_reference_answer(f"{prefix}{MARKER}{number}") == number


@FAST
@given(st.text().filter(lambda t: MARKER not in t), COMPLETIONS.filter(lambda t: MARKER not in t))
def test_math_rule_accepts_any_gold_written_after_the_marker(prefix, gold):
    """An answer equals itself whether or not the normaliser copes with it (the gold is cut
    to what the rule extracts: before any ".\n", without trailing dots or spaces)."""
    gold = re.sub(r"[\s.]+\Z", "", gold.split(".\n")[0]).strip()
    assert math_reference_correct(f"{prefix}{MARKER}{gold}", gold)


@FAST
@given(COMPLETIONS, COMPLETIONS)
def test_math_task_hook_gives_verdicts(completion, gold):
    """`evaluation/math_utils.py`, the function lm-eval calls per MATH response."""
    from lm_eval.tasks._yaml_loader import load_yaml

    process_results = load_yaml(ROOT / "evaluation" / "math.yaml")["process_results"]
    assert set(process_results({"answer": gold}, [completion]).values()) <= set(VERDICT)


@FAST
@given(COMPLETIONS, GOLD_NUMBERS)
def test_verl_gsm8k_rules_give_a_verdict_for_any_completion(completion, gold):
    for answer in (verl_gsm8k_answer(completion), verl_gsm8k_flexible_answer(completion)):
        assert answer is None or isinstance(answer, str)
    assert verl_gsm8k_reward(completion, gold) in VERDICT


@FAST
@given(COMPLETIONS, COMPLETIONS)
def test_verl_math_rule_gives_a_verdict_for_any_completion_and_gold(completion, gold):
    answer = verl_math_answer(completion)
    assert answer is None or isinstance(answer, str)
    assert verl_math_reward(completion, gold) in VERDICT



@FAST
@given(COMPLETIONS, COMPLETIONS)
def test_math_equivalence_is_hendrycks_is_equiv_as_lm_eval_ships_it(a, b):
    """The authors' MATH comparison (MetaMath's `util.is_equiv`) is Hendrycks' `is_equiv` and
    normaliser, which lm-eval's hendrycks_math task ships unchanged: the same verdict on any pair."""
    from lm_eval.tasks.hendrycks_math.utils import is_equiv

    assert math_equivalent(a, b) == is_equiv(a, b)


@FAST
@given(COMPLETIONS)
def test_verl_math_extraction_is_the_last_boxed_answer_as_lm_eval_reads_it(completion):
    """verl's MATH extraction (math_reward.py: `last_boxed_only_string`, then `remove_boxed`) is
    the code lm-eval's hendrycks_math ships: the same answer, and None where that finds no box
    or its `remove_boxed` rejects one (an \\fbox, an unclosed brace; verl's reward is then 0)."""
    from lm_eval.tasks.hendrycks_math.utils import last_boxed_only_string, remove_boxed

    try:
        expected = remove_boxed(last_boxed_only_string(completion))
    except (AssertionError, TypeError):  # TypeError: no box at all (None)
        expected = None
    assert verl_math_answer(completion) == expected

@FAST
@given(COMPLETIONS, COMPLETIONS)
def test_verl_task_hooks_give_verdicts(completion, gold):
    """`evaluation/verl_utils.py`, the functions lm-eval calls per Table 5 response."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for task, doc in (("gsm8k_verl.yaml", {"answer": f"steps\n#### {gold}"}), ("math_verl.yaml", {"answer": gold})):
        process_results = load_yaml(ROOT / "evaluation" / task)["process_results"]
        assert set(process_results(doc, [completion]).values()) <= set(VERDICT)


@FAST
@given(st.lists(st.one_of(COMPLETIONS, COMPLETIONS.map(lambda c: [{"role": "assistant", "content": c}])), min_size=1, max_size=4),
       st.sampled_from(["alpaca", "verl"]), st.sampled_from(["gsm8k", "math", "arith"]), st.data())
def test_grpo_rewards_give_verdicts(completions, protocol, fmt, data):
    """GRPO's reward functions (src/aggc/train/grpo.py), every protocol and format, on text
    and chat completions: a crash there would end a training run."""
    from aggc.train import grpo

    task, rule = grpo.ANSWER_RULES[protocol][fmt]
    golds = data.draw(st.lists(GOLD_NUMBERS if fmt != "math" else COMPLETIONS, min_size=len(completions), max_size=len(completions)))
    rewards = grpo.correctness_reward(rule, grpo.stop_strings(task))(completions=completions, answer=golds, prompts=None)
    assert len(rewards) == len(completions) and set(rewards) <= set(VERDICT)


@FAST
@given(COMPLETIONS)
def test_mt_bench_rating_parser_gives_a_rating_or_none(reply):
    from aggc.evaluate.mt_bench import parse_rating

    rating = parse_rating(reply)
    assert rating is None or (isinstance(rating, float) and rating >= 0 and not math.isnan(rating))


@settings(FAST, max_examples=15)
@given(COMPLETIONS.map(lambda t: t.encode("utf-8", "replace").decode()), st.sampled_from(["humaneval_sample.jsonl", "mbpp_sample.jsonl"]))
def test_code_scorers_give_verdicts(response, fixture):
    """HumanEval / MBPP (`evaluation/code_utils.py`): any response becomes a program, and its
    run in the sandbox a verdict (few examples: each runs a process). Responses are valid
    UTF-8, as a tokenizer's decoding makes them: a program with a lone surrogate cannot be
    written out (UnicodeEncodeError), and no model output has one."""
    from lm_eval.tasks._yaml_loader import load_yaml

    code_utils = sys.modules[load_yaml(ROOT / "evaluation" / "humaneval.yaml")["process_results"].__module__]
    doc = json.loads((ROOT / "tests" / "fixtures" / fixture).read_text().splitlines()[0])
    [solution] = code_utils.solutions([[response]], [doc])
    assert set(code_utils.process_results(doc, [solution]).values()) <= set(VERDICT)
