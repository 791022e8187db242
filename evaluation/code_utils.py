"""lm-eval hooks of `humaneval.yaml` and `mbpp.yaml`: response -> code -> test program ->
verdict, executed by the project's own sandbox (`aggc.evaluate.sandbox`; lm-eval's code
scorer fetches a metric from the hub and cannot run offline).

The pipeline of one response:

1. `extract_code` (the authors' post-processing, PiSSA `utils/code_process.py`, made a
   little more careful): `\\r` removed; the first ```python fenced block (else the first
   fenced block of any language, else the raw text); then cut before the first top-level
   `if __name__ == "__main__":`, `# Example usage` or `assert` line (the model's own demo
   code and tests; the authors cut at the first occurrence anywhere, which could also cut
   an `assert` inside the function body).
2. `solutions` (the task's filter, so lm-eval's per-sample log shows the code that ran):
   HumanEval -- the problem's prompt (signature, docstring, imports, helper functions)
   followed by the code. If the code defines the entry point itself, it comes after the
   prompt on its own (dedented) and replaces the prompt's body-less stub; this keeps the
   prompt's imports and helpers, which evalplus also has (it runs prompt + completion).
   If not, the code is taken as the function body and appended to the prompt.
   MBPP -- the code as it is.
3. `process_results`: the test program -- HumanEval: solution + `test` + `check(<entry
   point>)`; MBPP: solution + `test_setup_code` + the three `test_list` asserts (setup after
   the solution: the only test-split record with setup code, task 367, builds its trees
   with the solution's `Node` class) -- run in the sandbox with the problem's time limit
   and `MEMORY`; pass@1 is 1 when it runs to its end.

Time limits follow the reference solution, as in evalplus: a problem's limit is
max(`TIME_FLOOR`, `TIME_FACTOR` x the time its own solution's test program took, HumanEval
`canonical_solution`, MBPP `code`), measured once per process under the same load as the
generated code; a program that times out among others is run again alone before the
timeout counts (`sandbox.run_many`). So a slow problem gets the time it needs, and a busy
machine does not turn correct solutions into timeouts (a fixed 10 s with 8 programs at
once did, for MBPP 123's own solution).

Only the benchmarks' base tests are scored: the evalplus "plus" tests (HumanEval+,
MBPP+) are not available offline. `challenge_test_list` of MBPP is not scored (as usual).

The filter also runs every program of the task in parallel (`WORKERS` at a time) and
keeps the outcomes for `process_results`, which lm-eval calls one document at a time;
a program that is not found there is run on the spot, with the same result.
"""

from __future__ import annotations

import hashlib
import re
import textwrap

from aggc.evaluate.sandbox import Outcome, run_many, run_program

TIME_FLOOR = 10.0  # wall-clock seconds: the least limit of a test program (all tests of one problem)
TIME_FACTOR = 4.0  # x the reference solution's time (evalplus' default gt_time_limit_factor)
REFERENCE_TIMEOUT = 120.0  # wall-clock seconds for measuring a reference solution
MEMORY = 1 << 30  # bytes per test program: address space per process (RLIMIT_AS), and with its 32 MiB scratch the cgroup bound on all its processes together
WORKERS = None  # programs run at once by the filter; None = the CPU count, at most 8
MBPP_TEST_IDS = range(11, 511)  # google-research mbpp/README.md: task ids 11-510 are the test set

_PYTHON_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S | re.I)
_ANY_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
_CUT = re.compile(r"""^(?:if\s+__name__\s*==\s*["']__main__["']\s*:|# Example usage|assert\b)""", re.M)
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")


def extract_code(response: str) -> str:
    """The code in a model response (see the module docstring, step 1)."""
    text = response.replace("\r", "")
    match = _PYTHON_FENCE.search(text) or _ANY_FENCE.search(text)
    code = match.group(1) if match else text
    cut = _CUT.search(code)
    if cut:
        code = code[: cut.start()]
    return _LEADING_BLANK_LINES.sub("", code).rstrip()


def defines(code: str, name: str) -> bool:
    """Whether `code` has a `def name(` (at any indentation)."""
    return re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.M) is not None


def humaneval_solution(doc: dict, response: str) -> str:
    code = extract_code(response)
    if defines(code, doc["entry_point"]):
        return doc["prompt"] + "\n" + textwrap.dedent(code) + "\n"
    return doc["prompt"] + code + "\n"


def mbpp_solution(doc: dict, response: str) -> str:
    return extract_code(response) + "\n"


def is_humaneval(doc: dict) -> bool:
    return "entry_point" in doc


def solution(doc: dict, response: str) -> str:
    return humaneval_solution(doc, response) if is_humaneval(doc) else mbpp_solution(doc, response)


def build_program(doc: dict, solution_code: str) -> str:
    """The program whose clean run is a pass (see the module docstring, step 3)."""
    if is_humaneval(doc):
        return f"{solution_code}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"
    setup = doc.get("test_setup_code") or ""
    tests = "\n".join(doc["test_list"])
    return f"{solution_code}\n\n{setup}\n\n{tests}\n"


def reference_program(doc: dict) -> str:
    """The test program of the problem's own solution (HumanEval: prompt + canonical
    solution; MBPP: `code`)."""
    return build_program(doc, doc["prompt"] + doc["canonical_solution"] if is_humaneval(doc) else doc["code"])


def _key(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


_reference_seconds: dict[str, float] = {}  # reference program digest -> its measured wall-clock seconds
_outcomes: dict[str, Outcome] = {}  # (limit, memory, program) digest -> outcome, filled by `solutions`


def time_limits(docs: list[dict]) -> list[float]:
    """Each problem's time limit (see the module docstring); the reference solutions not
    measured yet in this process are run first, in parallel."""
    keys = [_key(MEMORY, reference_program(doc)) for doc in docs]
    todo = {k: reference_program(doc) for k, doc in zip(keys, docs) if k not in _reference_seconds}
    outcomes = run_many(list(todo.values()), workers=WORKERS, timeout=REFERENCE_TIMEOUT, memory=MEMORY)
    _reference_seconds.update((k, o.duration) for k, o in zip(todo, outcomes))
    return [max(TIME_FLOOR, TIME_FACTOR * _reference_seconds[k]) for k in keys]


def solutions(resps: list[list[str]], docs: list[dict]) -> list[str]:
    """lm-eval `custom` filter: each document's (first) response -> its solution code (like
    lm-eval's `take_first`, one string per document); also runs all the test programs in
    parallel and keeps the outcomes for `process_results`."""
    out = [solution(doc, resp[0]) for resp, doc in zip(resps, docs)]
    runs = {}  # key -> (program, time limit)
    for doc, code, limit in zip(docs, out, time_limits(docs)):
        program = build_program(doc, code)
        runs[_key(limit, MEMORY, program)] = (program, limit)
    todo = [k for k in runs if k not in _outcomes]
    outcomes = run_many([runs[k][0] for k in todo], workers=WORKERS, timeout=[runs[k][1] for k in todo], memory=MEMORY)
    _outcomes.update(zip(todo, outcomes))
    return out


def run_tests(doc: dict, solution_code: str) -> Outcome:
    program = build_program(doc, solution_code)
    [limit] = time_limits([doc])
    return _outcomes.pop(_key(limit, MEMORY, program), None) or run_program(program, timeout=limit, memory=MEMORY)


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """`results[0]` is the `solutions` filter's output for this document."""
    code = results[0][0] if isinstance(results[0], list) else results[0]
    outcome = run_tests(doc, code)
    return {
        "pass@1": float(outcome.status == "passed"),
        "timed_out": float(outcome.status == "timeout"),
        "out_of_memory": float(outcome.status == "out_of_memory"),
    }


def mbpp_test_split(dataset):
    """lm-eval `process_docs` of MBPP: only the test problems (task ids 11-510) of the full
    `mbpp.jsonl`; a file that holds only the test split passes through unchanged."""
    return dataset.filter(lambda doc: doc["task_id"] in MBPP_TEST_IDS)
