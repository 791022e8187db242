"""The shipped code still computes the committed numbers (tests/golden/runs.json): the tiny
Llama's build recipe and the cache entries every run starts from, and the first optimizer
steps of each trainer (SFT, GLUE, GRPO) under each clip mode, compared exactly, with one
CPU thread. Regenerate: `make golden` (tests/golden/__init__.py says when and how)."""

import pytest

from tests import golden

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def expected():
    return golden.load()


def test_the_golden_file_covers_every_case_at_the_pinned_settings(expected):
    assert (expected["steps"], expected["build_steps"], expected["threads"]) == (golden.STEPS, golden.BUILD_STEPS, golden.THREADS), \
        f"the golden settings changed: regenerate with `{golden.REGENERATE}`"
    assert sorted(expected["runs"]) == sorted(golden.CASES), f"cases added or removed: regenerate with `{golden.REGENERATE}`"
    for case, steps in expected["runs"].items():  # GRPO's numbers cover a policy gradient, not only the KL term's
        assert not case.startswith("grpo/") or any(r["frac_reward_zero_std"] < 1 for r in steps), \
            f"{case}: every prompt group got equal rewards at every step; pick a seed with a policy gradient"


def test_tiny_llama_build_recipe_first_steps(expected):
    got = golden.build_first_steps()
    diffs = golden.differences(expected["base"]["build_first_steps"], got, "build_first_steps")
    assert not diffs, golden.failure_message("the tiny Llama's build recipe", diffs)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_deberta"])
def test_cached_tiny_base(model, expected):
    """The spec-addressed cache entry that every run loads: a change to the spec is a new
    entry name (caught here before anything builds); a change to the recipe's code builds
    other weights on a cold cache (CI) and is caught by the build test on a warm one."""
    want = expected["base"]["cache"][model]
    got_name = golden.spec_entry_name(model)
    assert got_name == want["entry"], golden.failure_message(f"model={model}'s cache entry", [f"entry: {got_name!r}, expected {want['entry']!r}"])
    diffs = golden.differences(want, golden.cache_entry(model), f"cache.{model}")
    assert not diffs, golden.failure_message(f"model={model}'s cached base", diffs)


@pytest.mark.parametrize("case", sorted(golden.CASES))
def test_golden_run(case, expected, tmp_path):
    got = golden.run_case(case, tmp_path)
    assert [r["step"] for r in got] == list(range(golden.STEPS))
    diffs = golden.differences(expected["runs"][case], got, case)
    assert not diffs, golden.failure_message(f"golden run {case}", diffs)
