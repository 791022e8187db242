"""HumanEval+ and MBPP+ for the code benchmarks: evalplus' verdicts on its base and "plus"
tests, as the authors scored code (spec: "scored by evalplus ... record both").

evalplus is optional. It is used where it is installed and its data can be had (its cache,
`HUMANEVAL_OVERRIDE_PATH` / `MBPP_OVERRIDE_PATH`, else a download: on a cluster); elsewhere the
result says why not, and the benchmark's headline stays pass@1 on the base tests run in aggc's
sandbox (`evaluation/code_utils.py`), as offline. Not installed in this project's environment,
so this path is untested here (the tests check the fallback and the id mapping).

The solutions scored are exactly those the sandbox ran (the task filter's `code` extraction),
under evalplus' task ids ("HumanEval/N", "Mbpp/N"). HumanEval+ has HumanEval's 164 problems;
MBPP+ has 378 problems of all of MBPP, of which the test split (ids 11-510) generates only a
part: those are scored and counted (`n` beside `problems`). evalplus runs each program in its
own worker (`check_correctness`: its rlimits and time limits, max(1 s, 4 x the reference's
time) by default), not in aggc's sandbox.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec

EVALPLUS_VERSION = "0.3.1"  # the API called below (pyproject's `evalplus` extra pins it)
DATASETS = {"humaneval.yaml": "humaneval", "mbpp.yaml": "mbpp"}  # aggc's task file -> evalplus' dataset


def evalplus_id(dataset: str, task_id) -> str:
    """aggc's task id (HumanEval: "HumanEval/N", MBPP: the integer N) as evalplus names it."""
    return str(task_id) if dataset == "humaneval" else f"Mbpp/{task_id}"


def plus_scores(task: str, samples: list[dict]) -> dict:
    """{"used": False, "reason"} or {"used": True, "dataset", "problems", "n", "base", "plus"
    (pass@1 in %), "per_task": {evalplus id: {"base", "plus"}}} for a code task's samples
    (each with `task_id` and `code_extracted`, as `aggc.evaluate.per_sample` keeps them)."""
    dataset = DATASETS[task]
    if find_spec("evalplus") is None:
        return {"used": False, "reason": "evalplus is not installed (pip install -e '.[evalplus]'): base tests only"}
    try:
        installed = version("evalplus")
    except PackageNotFoundError:  # an `evalplus` folder on sys.path (python -m: the working directory)
        installed = None
    if installed != EVALPLUS_VERSION:  # its functions' signatures change between releases
        found = f"evalplus {installed} is installed" if installed else "an evalplus of no installed distribution is importable"
        return {"used": False, "reason": f"{found}; the harness calls {EVALPLUS_VERSION}'s API "
                                         "(pip install -e '.[evalplus]'): base tests only"}
    from evalplus.data import get_human_eval_plus, get_human_eval_plus_hash, get_mbpp_plus, get_mbpp_plus_hash
    from evalplus.eval import PASS
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.evaluate import check_correctness, get_groundtruth

    try:
        if dataset == "humaneval":
            problems, digest, not_none = get_human_eval_plus(), get_human_eval_plus_hash(), []
        else:
            problems, digest, not_none = get_mbpp_plus(), get_mbpp_plus_hash(), MBPP_OUTPUT_NOT_NONE_TASKS
    except Exception as e:  # no cache, no override path and no network
        return {"used": False, "reason": f"evalplus' {dataset} data is not available here ({e}): base tests only"}
    expected = get_groundtruth(problems, digest, not_none)
    per_task = {}
    for sample in samples:
        tid = evalplus_id(dataset, sample["task_id"])
        if tid in problems:
            verdict = check_correctness(dataset, 0, problems[tid], sample["code_extracted"], expected[tid], identifier=tid)
            base = verdict["base"][0] == PASS
            per_task[tid] = {"base": base, "plus": base and verdict["plus"][0] == PASS}
    if not per_task:
        return {"used": False, "reason": f"none of the generated problems is in evalplus' {dataset}+"}
    n = len(per_task)
    return {"used": True, "dataset": f"{dataset}+", "problems": len(problems), "n": n,
            "base": 100 * sum(v["base"] for v in per_task.values()) / n,
            "plus": 100 * sum(v["plus"] for v in per_task.values()) / n, "per_task": per_task}
