"""A benchmark's data file is checked when the evaluation starts, before the model loads:
what would fail the scoring after generation is refused with the file and line."""

import json

from hydra import compose, initialize_config_dir

from aggc.evaluate import check_inputs
from aggc.paths import CONF_DIR


def eval_config(benchmark: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=[f"eval={benchmark}", *overrides])


def test_gsm8k_gold_that_is_no_number_is_refused_before_the_model_loads(tmp_path):
    """The authors' GSM8K rule compares numbers; a gold after "####" that is none ("1/2",
    "five", nothing) made the benchmark fail after generation (and every rerun). It is refused
    when the evaluation starts, naming the file and line; numbers with commas pass."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    data = tmp_path / "gsm8k.jsonl"
    for bad in ("1/2", "five", ""):
        data.write_text(json.dumps({"question": "q", "answer": "s\n#### 1,080"}) + "\n"
                        + json.dumps({"question": "q", "answer": f"s\n#### {bad}"}) + "\n")
        for benchmark in ("gsm8k", "arith"):
            try:
                check_inputs(eval_config(benchmark, f"run={run}", f"eval.data={data}"))
            except Exception as e:
                assert f"{data}:2" in str(e) and repr(bad) in str(e), e
            else:
                raise AssertionError(f"accepted the gold {bad!r}")
    data.write_text(json.dumps({"question": "q", "answer": "s\n#### -1,080.5"}) + "\n" + "[]\n")
    try:
        check_inputs(eval_config("gsm8k", f"run={run}", f"eval.data={data}"))
    except Exception as e:
        assert f"{data}:2: not a JSON object" in str(e), e  # line 1 passed
    else:
        raise AssertionError("accepted a line that is no record")
    check_inputs(eval_config("gsm8k", f"run={run}"))  # the shipped GSM8K test set


def test_a_template_limited_arith_benchmark_holds_the_training_sets_held_out_kinds(tmp_path):
    """eval=arith_single_step scores held-out problems of data=arith_single_step's kinds (one
    step, + or -), written to a file of their own (never eval=arith's cached file), and its
    problems are the test split of the training config's generator."""
    from omegaconf import OmegaConf

    from aggc.data.formats import load_sft_records
    from aggc.evaluate import data_file

    cfg = eval_config("arith_single_step")
    path = data_file(cfg, tmp_path)
    assert path != data_file(eval_config("arith"), tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == cfg.eval.arith.eval_size
    for row in rows:
        steps = row["answer"].split("\n")[:-2]
        assert len(steps) == 1 and (" + " in steps[0] or " - " in steps[0]), row
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        train_cfg = compose("config", overrides=["data=arith_single_step"])
    held_out = load_sft_records(OmegaConf.to_container(train_cfg.data, resolve=True), "test")
    assert [r["instruction"] for r in held_out] == [r["question"] for r in rows]


def test_an_arith_benchmark_of_another_size_writes_its_own_data_file(tmp_path):
    """The held-out file was cached by seed (and templates) only: after an evaluation with
    eval.arith.eval_size=20, one with 50 (a new eval_id, so evaluated again) read the cached
    20 problems, and the other way round scored more problems than asked for."""
    from aggc.evaluate import data_file

    for size in (20, 50, 20):
        path = data_file(eval_config("arith", f"eval.arith.eval_size={size}"), tmp_path)
        assert len(path.read_text().splitlines()) == size
