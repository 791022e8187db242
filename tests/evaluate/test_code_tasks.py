"""HumanEval / MBPP tasks (`evaluation/humaneval.yaml`, `mbpp.yaml`, `code_utils.py`): code
extraction, test programs, verdicts in the sandbox, and the whole lm-eval path offline.
Each test states the property it checks."""

import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aggc.evaluate import sandbox
from aggc.paths import ROOT

from .test_sandbox import require_bwrap

FIXTURES = ROOT / "tests" / "fixtures"
HUMANEVAL = [json.loads(line) for line in (FIXTURES / "humaneval_sample.jsonl").read_text().splitlines()]
MBPP = [json.loads(line) for line in (FIXTURES / "mbpp_sample.jsonl").read_text().splitlines()]
FAST_TIMEOUT = 2.0
SMALL_MEMORY = 256 << 20
LOOP = "```python\ndef f():\n    while True:\n        pass\n\nf()\n```"
MEMORY_HOG = "```python\nchunks = []\nwhile True:\n    chunks.append(bytes(1 << 24))  # calloc: address space without touching pages, quick\n```"


def load_task(name: str) -> dict:
    """The task YAML as `aggc.evaluate` loads it (`!function` resolved next to the YAML)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(ROOT / "evaluation" / name)


@pytest.fixture
def cu(monkeypatch):
    """`code_utils`, the very module lm-eval resolved from the YAML, with short limits."""
    module = sys.modules[load_task("humaneval.yaml")["process_results"].__module__]
    monkeypatch.setattr(module, "TIME_FLOOR", FAST_TIMEOUT)
    monkeypatch.setattr(module, "MEMORY", SMALL_MEMORY)
    return module


def score(cu, doc: dict, response: str) -> dict:
    [solution] = cu.solutions([[response]], [doc])
    return cu.process_results(doc, [solution])


def fenced(code: str) -> str:
    return f"Here is the solution:\n\n```python\n{code}\n```\n\nIt loops over the input once."


# --- post-processing --------------------------------------------------------------------------

def test_extract_code_takes_the_first_python_block_else_any_block_else_the_text(cu):
    """The first ```python block wins (prose and later blocks dropped); a block without a
    language, an unclosed block (generation stopped) or plain text are taken as they are."""
    two = "Intro\n```python\ndef a():\n    return 1\n```\nand\n```python\ndef b():\n    return 2\n```"
    assert cu.extract_code(two) == "def a():\n    return 1"
    assert cu.extract_code("Text\n```\ndef a():\n    return 1\n```") == "def a():\n    return 1"
    assert cu.extract_code("```python\r\ndef a():\r\n    return 1\r\n") == "def a():\n    return 1"
    assert cu.extract_code("\n\n    return x + y\n") == "    return x + y"  # indentation of a body kept
    assert cu.extract_code("```py\nx = 1\n```") == "x = 1"


def test_extract_code_drops_the_models_demo_code_and_tests(cu):
    """The authors' cuts: code from the first top-level `if __name__ == "__main__":`,
    `# Example usage` or `assert` on is dropped; an assert inside a function is kept."""
    body = "def f(x):\n    assert x >= 0\n    return x"
    assert cu.extract_code(fenced(body + "\n\nif __name__ == '__main__':\n    print(f(input()))")) == body
    assert cu.extract_code(fenced(body + "\n\n# Example usage\nprint(f(3))")) == body
    assert cu.extract_code(fenced(body + "\n\nassert f(1) == 2\nassert f(2) == 2")) == body


def test_humaneval_solution_adds_the_prompt_when_needed(cu):
    """A completion without the entry point is the function body: it goes after the prompt.
    A completion that defines the entry point comes after the prompt (dedented), so the
    prompt's imports and helper functions are still there."""
    doc = HUMANEVAL[2]  # HumanEval/53, add(x, y)
    assert cu.humaneval_solution(doc, "    return x + y") == doc["prompt"] + "    return x + y\n"
    full = cu.humaneval_solution(doc, fenced("    def add(x, y):\n        return x + y"))
    assert full == doc["prompt"] + "\ndef add(x, y):\n    return x + y\n"
    assert cu.defines("async def add (a, b):", "add") and not cu.defines("def add_two(a):", "add")


# --- verdicts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("doc", HUMANEVAL, ids=lambda d: d["task_id"])
def test_humaneval_canonical_solutions_pass_as_body_and_as_full_function(cu, doc):
    """The real records' canonical solutions pass, given as the bare body (the prompt is
    added) and as a fenced full function without the prompt's imports or helpers."""
    passed = {"pass@1": 1.0, "timed_out": 0.0, "out_of_memory": 0.0}
    assert score(cu, doc, doc["canonical_solution"]) == passed
    signature = next(line for line in doc["prompt"].splitlines() if line.startswith(f"def {doc['entry_point']}("))
    assert score(cu, doc, fenced(signature + "\n" + doc["canonical_solution"])) == passed


@pytest.mark.parametrize("doc", MBPP, ids=lambda d: str(d["task_id"]))
def test_mbpp_canonical_solutions_pass(cu, doc):
    """The real test-split records' reference code passes (task 367 needs its setup code,
    which uses the solution's class)."""
    assert score(cu, doc, fenced(doc["code"])) == {"pass@1": 1.0, "timed_out": 0.0, "out_of_memory": 0.0}


def test_wrong_solutions_fail(cu):
    """A wrong answer, a solution under another name and prose without code all fail."""
    failed = {"pass@1": 0.0, "timed_out": 0.0, "out_of_memory": 0.0}
    add = HUMANEVAL[2]
    assert score(cu, add, fenced("def add(x, y):\n    return x - y")) == failed
    assert score(cu, add, fenced("def plus(x, y):\n    return x + y")) == failed  # add() keeps its empty body
    assert score(cu, MBPP[0], fenced("def remove_Occ(s, ch):\n    return s[1:-1]")) == failed
    assert score(cu, MBPP[1], "You sort the rows by their sums.") == failed


def test_an_endless_solution_is_a_timed_out_failure(cu):
    """A solution that never ends is killed at the time limit: pass@1 0, timed_out 1."""
    assert score(cu, HUMANEVAL[0], LOOP) == {"pass@1": 0.0, "timed_out": 1.0, "out_of_memory": 0.0}


def test_a_memory_hog_is_an_out_of_memory_failure(cu):
    """A solution that allocates without end is stopped at the memory limit: pass@1 0, out_of_memory 1."""
    assert score(cu, MBPP[2], MEMORY_HOG) == {"pass@1": 0.0, "timed_out": 0.0, "out_of_memory": 1.0}


def test_a_problems_time_limit_scales_with_its_reference_solutions_time(cu, monkeypatch):
    """A problem whose own solution takes 1 s gets TIME_FACTOR times that; a quick one gets
    the floor. So a solution that needs 3 s passes the slow problem and times out on the
    quick one (also when run again alone)."""
    monkeypatch.setattr(cu, "TIME_FLOOR", 0.5)
    quick = {"task_id": 9001, "text": "", "code": "def f():\n    return 1", "test_list": ["assert f() == 1"], "test_setup_code": ""}
    slow = {**quick, "task_id": 9002, "code": "import time\ndef f():\n    time.sleep(1.0)\n    return 1"}
    quick_limit, slow_limit = cu.time_limits([quick, slow])
    assert slow_limit >= cu.TIME_FACTOR * 1.0 and slow_limit > quick_limit + 2
    assert quick_limit == cu.time_limits([quick])[0]  # measured once
    three_seconds = fenced("import time\ndef f():\n    time.sleep(3)\n    return 1")
    assert score(cu, slow, three_seconds) == {"pass@1": 1.0, "timed_out": 0.0, "out_of_memory": 0.0}
    assert score(cu, quick, three_seconds) == {"pass@1": 0.0, "timed_out": 1.0, "out_of_memory": 0.0}


def benchmark(name: str) -> list[dict]:
    """The records of a benchmark, from where its eval config (conf/eval/<name>.yaml) points:
    the shipped file (resolved as the stages resolve it; unresolved, the default named no file
    and the test skipped itself). Missing, it is a failure: the data ships with the project."""
    path = Path(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "eval" / f"{name}.yaml"), resolve=True)["data"])
    assert path.is_file(), f"no {name} data at {path}"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("name, count", [("humaneval", 164), ("mbpp", 500)])
def test_every_reference_solution_passes_under_bwrap(name, count):
    """All 164 HumanEval canonical solutions and all 500 of MBPP's test split pass in the
    bwrap sandbox, with the time limits the task gives them (MBPP 123's takes ~5 s)."""
    require_bwrap()
    cu = sys.modules[load_task(f"{name}.yaml")["process_results"].__module__]
    docs = [d for d in benchmark(name) if name == "humaneval" or d["task_id"] in cu.MBPP_TEST_IDS]
    assert len(docs) == count
    outcomes = sandbox.run_many([cu.reference_program(d) for d in docs], timeout=cu.time_limits(docs), memory=cu.MEMORY)
    assert [(d["task_id"], o.status, o.stderr) for d, o in zip(docs, outcomes) if not o.passed] == []
    assert {o.isolation for o in outcomes} == {sandbox.BUBBLEWRAP}


def test_mbpp_keeps_only_the_test_split():
    """`process_docs` of MBPP keeps task ids 11-510 of the full file (the standard test set)."""
    import datasets

    cu = sys.modules[load_task("mbpp.yaml")["process_docs"].__module__]
    full = datasets.Dataset.from_list([{"task_id": i} for i in (1, 10, 11, 200, 510, 511, 974)])
    assert cu.mbpp_test_split(full)["task_id"] == [11, 200, 510]


# --- the whole lm-eval path -------------------------------------------------------------------

def scripted_lm(script: dict[str, str]):
    """A tiny lm-eval model: answers each request with the response whose key occurs in
    its context, and records the contexts and generation settings it was given."""
    from lm_eval.api.model import LM

    class ScriptedLM(LM):
        def __init__(self):
            super().__init__()
            self.requests = []

        def generate_until(self, requests):
            self.requests += [r.args for r in requests]
            return [next(v for k, v in script.items() if k in r.args[0]) for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return ScriptedLM()


def evaluate(task_file: str, data_file, script: dict[str, str], cu) -> tuple[dict, dict, object]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    task = load_task(task_file)
    task["dataset_kwargs"]["data_files"]["test"] = str(data_file)
    task["generation_kwargs"]["max_gen_toks"] = 512
    lm = scripted_lm(script)
    # include_defaults=False: a task given as a dict needs no index of lm-eval's own tasks (saves ~15 s)
    results = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_defaults=False), log_samples=True)
    return results["results"][task["task"]], results["samples"][task["task"]], lm


ALPACA = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n"
STOPS = ["Question:", "Question", "USER:", "USER", "ASSISTANT:", "ASSISTANT", "Instruction:", "Instruction", "Response:", "Response", "</s>"]


def test_humaneval_through_lm_eval(cu):
    """lm-eval, offline, with the task YAML: the Alpaca prompt around the problem, the
    authors' generation settings, and exact scores from the sandbox (a canonical solution,
    a wrong one, an endless loop), with the executed code in the per-sample log."""
    he0, _, he53 = HUMANEVAL
    script = {
        "def has_close_elements(": he0["canonical_solution"],
        "def make_palindrome(": LOOP,
        "def add(": fenced("def add(x, y):\n    return x * y"),
    }
    metrics, samples, lm = evaluate("humaneval.yaml", FIXTURES / "humaneval_sample.jsonl", script, cu)
    assert metrics["pass@1,code"] == pytest.approx(1 / 3)
    assert metrics["timed_out,code"] == pytest.approx(1 / 3)
    assert metrics["out_of_memory,code"] == 0
    context, settings = next(args for args in lm.requests if "def add(" in args[0])
    assert context == ALPACA + "Create a Python script for this problem:\n" + he53["prompt"].strip() + "\n\n### Response:"
    assert settings["until"] == STOPS and settings["do_sample"] is False and settings["max_gen_toks"] == 512
    by_id = {s["doc"]["task_id"]: s for s in samples}
    assert by_id["HumanEval/0"]["filtered_resps"][0] == he0["prompt"] + he0["canonical_solution"].rstrip() + "\n"
    assert [by_id[t]["pass@1"] for t in ("HumanEval/0", "HumanEval/10", "HumanEval/53")] == [1.0, 0.0, 0.0]


def test_mbpp_through_lm_eval(cu):
    """lm-eval, offline, with the task YAML: the problem text and its first test in the
    Alpaca prompt, and exact scores (two reference solutions, one memory hog)."""
    m11, m12, m367 = MBPP
    script = {"first and last occurrence": fenced(m11["code"]), "sum of its rows": MEMORY_HOG, "binary tree is balanced": m367["code"]}
    metrics, samples, lm = evaluate("mbpp.yaml", FIXTURES / "mbpp_sample.jsonl", script, cu)
    assert metrics["pass@1,code"] == pytest.approx(2 / 3)
    assert metrics["out_of_memory,code"] == pytest.approx(1 / 3)
    assert metrics["timed_out,code"] == 0
    context = next(args[0] for args in lm.requests if "sum of its rows" in args[0])
    assert context == (ALPACA + "Create a Python script for this problem:\n" + m12["text"] + "\nYour code should pass this test:\n"
                       + m12["test_list"][0] + "\n\n### Response:")
    assert sorted(s["doc"]["task_id"] for s in samples) == [11, 12, 367]
    assert [s["target"] for s in samples if s["doc"]["task_id"] == 12] == ["\n".join(m12["test_list"])]
