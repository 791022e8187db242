"""Properties of the synthetic arithmetic problems."""

import re

import pytest

from aggc.data import arith


def test_same_seed_and_split_give_identical_problems():
    assert arith.generate(50, seed=3, split="train") == arith.generate(50, seed=3, split="train")


def test_different_seeds_give_different_problems():
    assert arith.generate(50, seed=0, split="train") != arith.generate(50, seed=1, split="train")


def test_splits_share_no_question_across_seeds():
    questions = {
        split: {r["question"] for seed in (0, 1) for r in arith.generate(500, seed, split)} for split in arith.SPLITS
    }
    assert not questions["train"] & questions["test"]
    assert not questions["pretrain"] & questions["test"]
    assert not questions["pretrain"] & questions["train"]


def test_questions_are_distinct_within_a_split():
    records = arith.generate(500, seed=0, split="test")
    assert len({r["question"] for r in records}) == 500


@pytest.mark.parametrize("split", arith.SPLITS)
def test_output_ends_with_the_answer_line_and_every_step_is_correct(split):
    for record in arith.generate(200, seed=0, split=split):
        *steps, last = record["output"].split("\n")
        assert last == f"The answer is: {record['answer']}"
        for step in steps:
            left, right = step.split(" = ")
            assert eval(left) == int(right), step  # steps are "a op b = c" with op in + - *
        assert int(re.findall(r"-?\d+", steps[-1])[-1]) == int(record["answer"])


def test_all_four_templates_occur():
    outputs = [r["output"] for r in arith.generate(200, seed=0, split="train")]
    assert any(" * " in o for o in outputs)
    assert any(" + " in o and " - " not in o for o in outputs)
    assert any(" - " in o and " + " not in o for o in outputs)
    assert any(" + " in o and " - " in o for o in outputs)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split"):
        arith.generate(1, seed=0, split="validation")


OPERATORS = {"add": "+", "subtract": "-", "multiply": "*"}


@pytest.mark.parametrize("templates", [["add"], ["add", "subtract"], ["multiply", "subtract"]])
def test_templates_limit_the_kinds_of_problem_and_splits_stay_disjoint(templates):
    """`templates` draws only those kinds (one step with their operators); the test split
    still shares no question with training, and all kinds appear with enough problems."""
    train = arith.generate(300, seed=0, split="train", templates=templates)
    test = arith.generate(100, seed=0, split="test", templates=templates)
    seen = set()
    for record in train + test:
        steps = record["output"].split("\n")[:-1]
        assert len(steps) == 1
        seen |= {name for name in templates if f" {OPERATORS[name]} " in steps[0]}
    assert seen == set(templates)
    assert not {r["question"] for r in train} & {r["question"] for r in test}


def test_all_templates_named_draw_the_default_problems():
    """Naming every template in order is the default: data=arith's problems are unchanged by the knob."""
    assert arith.generate(200, 0, "train", list(arith.TEMPLATES)) == arith.generate(200, 0, "train")


@pytest.mark.parametrize("templates", [[], ["divide"], ["add", "add"]])
def test_unknown_empty_or_repeated_templates_are_refused(templates):
    with pytest.raises(ValueError, match="add, subtract, multiply, two_step"):
        arith.generate(10, 0, "train", templates)


def test_a_template_given_as_a_bare_name_is_refused_naming_it():
    """data.templates=add (no brackets) is a string: it was read as the list of its letters
    and refused as ['a', 'd', 'd']; the refusal names what was given and the list form."""
    with pytest.raises(ValueError, match=r"arith templates 'add': a list \(\[add\]\)"):
        arith.check_templates("add")
