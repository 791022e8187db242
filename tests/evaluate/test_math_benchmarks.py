"""MATH under its two names: `eval=math` is the full MATH test from the hub (the paper's
column), `eval=math500` the shipped MATH-500; the same task and scorers read both."""

import json

from hydra import compose, initialize_config_dir

from aggc.evaluate import check_inputs, hub_file
from aggc.paths import CONF_DIR, ROOT

MATH500 = ROOT / "data" / "math500" / "test.jsonl"


def eval_config(benchmark: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["run=.", f"eval={benchmark}", *overrides])


def test_math_and_math500_are_distinct_benchmarks():
    full, five_hundred = eval_config("math").eval, eval_config("math500").eval
    assert (full.name, five_hundred.name) == ("math", "math500")  # result files math.json, math500.json
    assert full.data == "hub" and full.hub.split == "test" and five_hundred.data == str(MATH500)
    assert (full.task, full.scores, full.score) == (five_hundred.task, five_hundred.scores, five_hundred.score)


def test_full_math_gold_is_the_solutions_last_boxed(tmp_path):
    """The hub's MATH rows (problem, solution, level, type) become MATH-500's fields; on the
    500 problems both have, the answer read from the solution is MATH-500's own."""
    shipped = [json.loads(line) for line in MATH500.read_text().splitlines()]
    hub = tmp_path / "hub_copy"
    hub.mkdir()
    (hub / "test.jsonl").write_text("".join(json.dumps({"problem": r["problem"], "solution": r["solution"],
                                                        "level": f"Level {r['level']}", "type": r["subject"]}) + "\n"
                                            for r in shipped))
    cfg = eval_config("math", f"eval.hub.path={hub}")
    written = [json.loads(line) for line in hub_file(cfg, tmp_path / "eval").read_text().splitlines()]
    assert [(w["problem"], w["answer"], w["subject"]) for w in written] == [(r["problem"], r["answer"], r["subject"]) for r in shipped]


def test_hub_benchmark_without_a_source_is_refused(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    cfg = eval_config("math", f"run={run}", "eval.hub.path=null")
    try:
        check_inputs(cfg)
    except Exception as e:
        assert "eval.hub.path" in str(e)
    else:
        raise AssertionError("accepted eval.data=hub without eval.hub.path")
