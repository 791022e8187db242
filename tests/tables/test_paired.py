"""Paired comparisons (aggc.tables.paired) on synthetic per-item verdicts whose answer is
known: a built-in difference is found, none is found where there is none, at the stated
rates (simulated false-positive rate near α, power near 80% at the stated MDE)."""

import numpy as np
import pytest

from aggc.tables import PAIRED_HEADER, paired
from aggc.tables.paired import ALPHA, compare, item_values, paired_statistics, verdict


def draw(rng, p_ref, delta, seeds=3):
    """(seeds x items) verdicts in percent: item i right with probability p_ref[i] for the
    reference and p_ref[i] + delta for the row, independently per seed."""
    shape = (seeds, len(p_ref))
    ref = 100.0 * (rng.random(shape) < p_ref)
    new = 100.0 * (rng.random(shape) < np.clip(p_ref + delta, 0, 1))
    return ref, new


@pytest.fixture
def fast(monkeypatch):
    """Fewer resamples for the simulations (the procedure is the same; p is resolved to 2e-3)."""
    monkeypatch.setattr(paired, "N_RESAMPLES", 499)


def test_false_positive_rate_is_near_alpha_under_the_null(fast):
    """200 synthetic nulls (both rows right with the same per-item probability): p < 0.05 in
    about 5% of them (3 binomial SDs: 1%-10%), and the 95% interval covers 0 about 95% of the time."""
    rng = np.random.default_rng(1)
    sims, rejected, covered = 200, 0, 0
    for _ in range(sims):
        p_ref = rng.uniform(0.1, 0.7, size=200)
        r = paired_statistics(*draw(rng, p_ref, 0.0), paper=None)
        rejected += r.p < ALPHA
        covered += r.low <= 0 <= r.high
    assert 0.01 <= rejected / sims <= 0.10
    assert 0.90 <= covered / sims <= 0.99


def test_interval_covers_a_null_whose_items_differ_alike_in_every_seed(fast):
    """Items one row gets right and the other wrong, in every seed (an item x row interaction
    shared by the seeds), drawn so that neither row is better on average: the 95% interval
    covers 0 about 95% of the time (94.7% measured; 3 binomial SDs: 88%+). Resampling each
    seed's items as independent items, the narrowing the module avoids, covers 79% here."""
    rng = np.random.default_rng(10)
    sims, covered = 150, 0
    for _ in range(sims):
        p_ref, p_row = rng.choice([0.1, 0.9], 200), rng.choice([0.1, 0.9], 200)
        ref, row = 100.0 * (rng.random((3, 200)) < p_ref), 100.0 * (rng.random((3, 200)) < p_row)
        r = paired_statistics(ref, row, paper=None)
        covered += r.low <= 0 <= r.high
    assert covered / sims >= 0.88


def test_power_at_the_stated_mde_is_near_80_percent(fast):
    """A built-in difference of the size the comparison says it can detect (its MDE) is
    found in about 80% of repetitions (60%-95% over 100); a large one (+30 points) always."""
    rng = np.random.default_rng(2)
    p_ref = rng.uniform(0.1, 0.7, size=200)
    mde = np.median([paired_statistics(*draw(rng, p_ref, 0.0), paper=None).mde for _ in range(20)]) / 100
    found = [paired_statistics(*draw(rng, p_ref, mde), paper=None) for _ in range(100)]
    assert 0.60 <= np.mean([r.p < ALPHA for r in found]) <= 0.95
    large = [paired_statistics(*draw(rng, p_ref, 0.3), paper=None) for _ in range(20)]
    assert all(r.p < ALPHA and r.verdict == "differs" and r.low <= 30 <= r.high + 3 for r in large)


def test_built_in_difference_is_found_and_its_size_estimated():
    rng = np.random.default_rng(3)
    ref, new = draw(rng, np.full(300, 0.3), 0.2)
    r = paired_statistics(ref, new, paper=20.0)
    assert r.p < ALPHA and r.low <= 20 <= r.high and r.verdict == "consistent with the paper"
    assert paired_statistics(ref, new, paper=-5.0).verdict == "contradicts the paper"
    assert abs(r.delta - (new.mean() - ref.mean())) < 1e-9 and r.items == 300


def test_no_difference_is_found_where_there_is_none():
    rng = np.random.default_rng(4)
    ref, new = draw(rng, rng.uniform(0.2, 0.6, 200), 0.0)
    r = paired_statistics(ref, new, paper=None)
    assert r.p >= ALPHA and r.low <= 0 <= r.high and r.verdict == "no difference found"
    # a paper Δ inside the interval: this n cannot tell it from no difference
    assert paired_statistics(ref, new, paper=r.high / 2).verdict == "inconclusive at this n"


def test_identical_rows_have_no_difference_and_no_mde():
    ref = 100.0 * (np.random.default_rng(5).random((3, 50)) < 0.5)
    r = paired_statistics(ref, ref.copy(), paper=None)
    assert (r.delta, r.low, r.high, r.p, r.p_seeds, r.mde) == (0.0, None, None, 1.0, None, None)


def test_same_input_same_numbers():
    """A fixed random seed: the table a `make demo` writes is reproduced byte for byte."""
    rng = np.random.default_rng(6)
    ref, new = draw(rng, rng.uniform(0.2, 0.6, 100), 0.05)
    assert paired_statistics(ref, new, paper=1.0) == paired_statistics(ref, new, paper=1.0)


def test_verdict_rules():
    """Item-level verdicts, carried across seeds only where the per-seed Δs agree (t-test)."""
    seeds_agree, seeds_disagree = (2.9, 3.0, 3.1), (0.5, 1.0, 7.5)
    assert verdict(3.0, 1.0, 5.0, 0.01, None, seeds_agree) == "differs"
    assert verdict(3.0, 1.0, 5.0, 0.01, None, seeds_disagree) == "differs on these seeds only"
    assert verdict(3.0, 1.0, 5.0, 0.01, None, (3.0,)) == "differs on these seeds only"  # one seed: no seed-level test
    assert verdict(3.0, -1.0, 5.0, 0.2, None, seeds_agree) == "no difference found"
    assert verdict(3.0, 1.0, 5.0, 0.01, 4.0, seeds_agree) == "consistent with the paper"
    assert verdict(3.0, 1.0, 5.0, 0.01, 4.0, seeds_disagree) == "consistent with the paper on these seeds only"
    assert verdict(3.0, 1.0, 5.0, 0.01, 6.0, seeds_agree) == "contradicts the paper"
    assert verdict(3.0, 1.0, 5.0, 0.01, 6.0, seeds_disagree) == "contradicts the paper on these seeds only"
    assert verdict(1.0, -1.0, 3.0, 0.3, 2.0, seeds_agree) == "inconclusive at this n"
    assert verdict(0.0, None, None, 1.0, 5.0, (0.0, 0.0, 0.0)) == "inconclusive at this n"  # no interval to exclude it


def test_a_difference_between_trained_models_is_not_called_a_difference_between_strategies(fast):
    """A null at the strategy level: both rows are the same strategy, but every trained model
    (row x seed) has its own accuracy offset, as training seeds give. The item-level test,
    conditional on the models, finds these models differ often; the unqualified verdict
    "differs" (which claims the seeds agree) stays near α; the rest say "on these seeds only"."""
    rng = np.random.default_rng(8)

    def model(logits):
        shifted = logits + rng.normal(0, 0.3) + rng.normal(0, 0.5, len(logits))
        return 100.0 * (rng.random(len(logits)) < 1 / (1 + np.exp(-shifted)))

    results = []
    for _ in range(100):
        logits = np.log(1 / rng.uniform(0.2, 0.8, 200) - 1)
        ref, new = (np.array([model(logits) for _ in range(3)]) for _ in range(2))
        results.append(paired_statistics(ref, new, paper=None))
    assert np.mean([r.p < ALPHA for r in results]) > 0.15
    assert np.mean([r.verdict == "differs" for r in results]) <= 0.10
    assert all(r.verdict in ("no difference found", "differs on these seeds only") or r.verdict == "differs" and r.p_seeds < ALPHA
               for r in results)


def test_equal_item_differences_have_no_interval_and_cannot_contradict_the_paper():
    """Two identical items: a bootstrap interval of zero width said "contradicts the paper"
    (paper Δ 5) from 2 items, while one differing item of 2 said "inconclusive"."""
    same = compare({0: {"a": 0.0, "b": 0.0}}, {0: {"a": 0.0, "b": 0.0}}, 5.0)
    assert (same.low, same.high, same.verdict) == (None, None, "inconclusive at this n")
    both = compare({0: {"a": 0.0, "b": 0.0}}, {0: {"a": 100.0, "b": 100.0}}, None)
    assert (both.low, both.high, both.p, both.verdict) == (None, None, 0.5, "no difference found")


def test_a_non_finite_item_value_or_paper_delta_is_refused():
    with pytest.raises(ValueError, match="finite"):
        paired_statistics(np.array([[0.0, 100.0, 0.0]]), np.array([[0.0, np.nan, 100.0]]), paper=None)
    with pytest.raises(ValueError, match="finite"):
        paired_statistics(np.array([[0.0, 100.0, 0.0]]), np.array([[100.0, 100.0, 0.0]]), paper=float("nan"))


def test_equality_is_up_to_float_rounding():
    """Scores shifted by a constant that float arithmetic blurs (ptp ~1e-17) are equal
    differences: no near-zero-width interval; per-seed Δs equal but for the last bit
    (0.1 + 0.2 vs 0.3) have no spread to t-test (they gave p = 1e-32)."""
    ref = np.random.default_rng(11).uniform(0, 10, (3, 50))
    r = paired_statistics(ref, ref + 0.1, paper=5.0)
    assert (r.low, r.high, r.mde, r.verdict) == (None, None, None, "inconclusive at this n")
    assert paired.seed_level_p((0.1 + 0.2, 0.3, 0.3)) is None


def test_rendered_differences_have_no_negative_zero_and_tex_minus_only_on_numbers():
    from aggc.tables import _paired_cells, tex_paired_cells

    ref = np.zeros((3, 40))
    new = ref.copy()
    new[0, 0], new[1, 1] = -0.02, 0.01  # Δ -0.00008: rounds to zero
    cells = _paired_cells({"result": paired_statistics(ref, new, paper=None)})
    assert cells[0] == "+0.00" and "-0.00" not in " ".join(cells)
    reason = {"result": "no per-item scores", "paper": -1.5}
    assert tex_paired_cells(reason)[4] == "$-$1.50" and tex_paired_cells(reason)[5] == "no per-item scores"


def test_p_at_the_resampling_floor_is_shown_as_a_bound():
    """No permutation of 9999 reaches a large difference over 200 items: p is printed as "≤0.0002",
    not as if measured; an exact test over a few items is printed as it is."""
    from aggc.tables import _paired_cells

    rng = np.random.default_rng(9)
    big = paired_statistics(*draw(rng, np.full(200, 0.2), 0.5), paper=None)
    few = paired_statistics(np.array([[0.0] * 4 + [100.0] * 4]), np.array([[100.0] * 8]), paper=None)
    assert big.p_at_floor and _paired_cells({"result": big})[2] == "≤0.0002"
    assert not few.p_at_floor and _paired_cells({"result": few})[2] == f"{few.p:.4f}"


def test_compare_pairs_seeds_and_items_and_refuses_different_items():
    ref = {0: {"a": 0.0, "b": 100.0}, 1: {"a": 0.0, "b": 0.0}, 2: {"a": 100.0, "b": 0.0}}
    row = {0: {"a": 100.0, "b": 100.0}, 1: {"a": 100.0, "b": 100.0}}  # seed 2 not run yet
    r = compare(ref, row, None)
    assert r.seeds == (0, 1) and r.items == 2 and r.per_seed == (50.0, 100.0) and r.delta == 75.0
    assert compare(ref, {0: {"a": 0.0, "c": 0.0}}, None) == "scored on different items"
    assert compare(ref, {5: {"a": 0.0, "b": 0.0}}, None) == "no seed with both results"


def test_a_single_item_is_a_reason_not_a_crash():
    """One item (e.g. an eval.limit=1 result) with a difference: scipy's tests refuse one
    observation, so the table says why there is no comparison instead of failing to render."""
    assert compare({0: {"a": 0.0}, 1: {"a": 0.0}}, {0: {"a": 100.0}, 1: {"a": 100.0}}, 50.0) == \
        "one item only: no interval, no test"
    assert compare({0: {"a": 0.0}}, {0: {"a": 0.0}}, None) == "one item only: no interval, no test"


def _lm_eval(score_key, samples, score, reference=None):
    scores = {"strict": "exact_match,strict", "flexible": "exact_match,flexible", "pass@1": "pass@1,code",
              "reference": "reference,none"}
    settings = {"kind": "lm_eval", "score": score_key, "scores": scores, **({"reference": reference} if reference else {})}
    return {"score": score, "samples": samples, "eval_settings": {"eval": settings}}


@pytest.mark.parametrize("result, expected", [
    # GSM8K under the authors' rule, lm-eval's strict filter, MATH's reference metric, HumanEval's pass@1
    (_lm_eval("reference", [{"doc_id": 0, "reference_correct": True}, {"doc_id": 1, "reference_correct": False}], 50.0,
              reference="gsm8k"), {"0": 100.0, "1": 0.0}),
    (_lm_eval("strict", [{"doc_id": 0, "strict_exact_match": 1.0}, {"doc_id": 1, "strict_exact_match": 1.0}], 100.0),
     {"0": 100.0, "1": 100.0}),
    (_lm_eval("reference", [{"doc_id": 3, "reference": 0.0}, {"doc_id": 4, "reference": 1.0}], 50.0), {"3": 0.0, "4": 100.0}),
    (_lm_eval("pass@1", [{"doc_id": 0, "code_pass@1": 1.0}, {"doc_id": 1, "code_pass@1": 0.0}], 50.0), {"0": 100.0, "1": 0.0}),
    # MT-Bench's eval config has no `score` key (its one score is the mean rating: conf/eval/mt_bench.yaml)
    ({"score": 6.5, "eval_settings": {"eval": {"kind": "mt_bench"}},
      "samples": [{"question_id": 81, "ratings": [{"median": 8}, {"median": 6}]},
                  {"question_id": 82, "ratings": [{"median": 7}, {"median": 5}]}]}, {"81": 7.0, "82": 6.0}),
    ({"score": 50.0, "eval_settings": {"eval": {"kind": "glue", "score": "matched_accuracy"}},
      "samples": [{"split": "matched", "index": 0, "label": 1, "prediction": 1},
                  {"split": "matched", "index": 1, "label": 0, "prediction": 1},
                  {"split": "mismatched", "index": 0, "label": 0, "prediction": 1}]}, {"matched/0": 100.0, "matched/1": 0.0}),
    # no per-item mean: Matthews correlation, a score its items do not give, no samples at all
    ({"score": 12.0, "eval_settings": {"eval": {"kind": "glue", "score": "mcc"}},
      "samples": [{"split": "validation", "index": 0, "label": 1, "prediction": 1}]}, None),
    (_lm_eval("reference", [{"doc_id": 0, "reference_correct": True}], 40.0, reference="gsm8k"), None),
    ({"score": 40.0}, None),
])
def test_item_values_are_the_items_whose_mean_is_the_score(result, expected):
    assert item_values(result) == expected


@pytest.mark.parametrize("bad", [{"doc_id": 1, "reference_correct": "yes"}, {"doc_id": 1, "reference_correct": None},
                                 {"reference_correct": True}], ids=["a word", "null", "no doc_id"])
def test_an_unreadable_item_verdict_is_no_per_item_score_not_a_crash(bad):
    """One hand-edited or corrupt sample in one eval file made the whole table fail with a
    traceback; its comparisons now say there are no per-item scores and the table renders."""
    result = _lm_eval("reference", [{"doc_id": 0, "reference_correct": True}, bad], 50.0, reference="gsm8k")
    assert item_values(result) is None


def test_demo_table_from_eval_files_finds_the_built_in_difference_and_no_other(tmp_path):
    """Synthetic eval files for `make demo`'s grid, per-item verdicts in the lm-eval samples
    as the evaluation stage writes them: the positive control's row is right on 10% of the
    items, every other row on the same per-item probabilities (no difference). The table's
    paired section finds the control's difference (p < 0.05, interval around the built-in
    Δ) and none between AGGC and LoRA; the paired CSV and the LaTeX say the same."""
    import csv

    from hydra import initialize_config_dir

    from aggc.paths import CONF_DIR

    from ..synthetic import completed_run, evaluated, table_plan, train_config
    from .test_tables import tables_cli

    rng = np.random.default_rng(7)
    p_items = rng.uniform(0.3, 0.6, 200)

    def correct(cell):
        control = dict(cell.match).get("clip.max_norm") == "1e-07"
        return list(rng.random(200) < (0.1 if control else p_items))

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg, spec, dirs, evals = table_plan("demo", tmp_path)
        for cell, run in dirs.items():
            completed_run(run, train_config(cfg, spec, cell))
            evaluated(run, evals["arith"], correct=correct(cell))
    md = tables_cli(tmp_path, "demo", "table.name=mini", "~table.figure")  # no metrics.jsonl to draw
    lines = {tuple(c.strip() for c in line.split("|")[3:5]): line for line in md.splitlines() if line.count("|") == 5 + len(PAIRED_HEADER)}
    control = lines[("Control: LoRA, clip at 1e-7", "LoRA")].split("|")
    assert control[10].strip() == "differs" and float(control[7].strip(" ≤")) < ALPHA and float(control[8]) < ALPHA
    low, high = map(float, control[6].strip(" []").split(","))
    truth = 100 * (0.1 - p_items.mean())
    assert low <= truth <= high
    assert "| no difference found |" in lines[("AGGC", "LoRA")]
    rows = list(csv.DictReader((tmp_path / "out" / "mini.paired.csv").open()))
    assert [(r["row"], r["verdict"]) for r in rows] == [("AGGC", "no difference found"), ("AGGC", "no difference found"),
                                                        ("Control: LoRA, clip at 1e-7", "differs")]
    assert r"Control: LoRA, clip at 1e-7 & LoRA & $-$" in (tmp_path / "out" / "mini.tex").read_text()


def test_mt_bench_items_under_its_own_eval_config():
    """MT-Bench's real eval settings (conf/eval/mt_bench.yaml, no `score` key: its one score
    is the mean rating) give per-question ratings: before, its comparisons read "no per-item scores"."""
    import yaml

    from aggc.paths import CONF_DIR

    settings = yaml.safe_load((CONF_DIR / "eval" / "mt_bench.yaml").read_text())
    samples = [{"question_id": 81, "ratings": [{"median": 8.0}, {"median": 6.0}]},
               {"question_id": 82, "ratings": [{"median": 7.0}, {"median": 4.0}]}]
    assert item_values({"score": 6.25, "eval_settings": {"eval": settings}, "samples": samples}) == {"81": 7.0, "82": 5.5}


def test_two_results_of_one_seed_are_a_reason_not_a_silent_pick():
    """A row with two results of one seed on a benchmark (its runs on two training sets, both
    evaluated on it) has no one set of items per seed: the comparison says so instead of
    pairing whichever result came last."""
    from aggc.tables import comparisons

    def record(strategy, seed, data, items):
        return {"model": "m", "strategy": strategy, "clip": "global", "seed": seed, "benchmark": "b", "config": {},
                "items": items, "data": data}

    good, bad = {"0": 100.0, "1": 0.0}, {"0": 0.0, "1": 0.0}
    records = [record("lora", 0, "x", bad), record("aggc", 0, "x", good), record("aggc", 0, "y", bad)]
    spec = {"name": "t", "models": ["m"], "columns": [{"benchmark": "b", "label": "B"}],
            "rows": [{"label": "LoRA", "strategy": "lora", "clip": "global"}, {"label": "AGGC", "strategy": "aggc", "clip": "global"}],
            "compare": [{"row": "AGGC", "reference": "LoRA"}]}
    assert [c["result"] for c in comparisons(spec, records, [])] == ["AGGC: several results of one seed"]
    assert isinstance(comparisons(spec, records[:2], [])[0]["result"], paired.Paired)
