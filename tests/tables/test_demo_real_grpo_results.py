"""The committed real-model RL demo (`make demo-real-grpo`, results/demo-real/table5_curves.csv):
GRPO and GRPO + AGGC each learn, on every seed. The property is read from the committed file,
so a regenerated demo whose reward no longer rises, or a file that lost a run, a step or a
column's meaning, fails here."""

import csv
import math
import statistics

import pytest
import yaml

from aggc.paths import CONF_DIR, ROOT
from aggc.tables.figures import CURVE_COLUMNS

CURVES = ROOT / "results" / "demo-real" / "table5_curves.csv"
RISE = 0.1  # mean reward of the last third of the steps minus the first third's, at least
STRATEGIES = ("GRPO", "GRPO + AGGC")
SEEDS = ("0", "1", "2")


def max_steps() -> int:
    """The optimizer steps the demo's grid trains (conf/table/demo_real_grpo.yaml)."""
    args = yaml.safe_load((CONF_DIR / "table" / "demo_real_grpo.yaml").read_text())["grid"]["train_args"]
    return int(next(a.split("=", 1)[1] for a in args if a.startswith("train.max_steps=")))


def curves() -> dict[tuple[str, str], list[dict]]:
    with open(CURVES, newline="") as f:  # committed: a missing file fails, it is no skip
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CURVE_COLUMNS
        rows = list(reader)
    by_run: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_run.setdefault((r["strategy"], r["seed"]), []).append(r)
    return by_run


def test_both_strategies_have_three_seeds_of_whole_curves():
    """Every run: one row per optimizer step 0..max_steps-1, in order, every value in its range."""
    by_run = curves()
    assert sorted(by_run) == sorted((s, seed) for s in STRATEGIES for seed in SEEDS)
    for run, rows in by_run.items():
        assert [int(r["step"]) for r in rows] == list(range(max_steps())), run
        for r in rows:
            reward, kl, pg_loss, zero_std = (float(r[k]) for k in ("reward", "kl", "pg_loss", "frac_reward_zero_std"))
            assert 0 <= reward <= 1 and 0 <= zero_std <= 1 and kl >= 0 and math.isfinite(pg_loss), (run, r)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_two_strategies_are_two_runs(seed):
    """The strategies share each completion's random numbers, so their curves start alike; they
    must part (a copied curve is no second run)."""
    by_run = curves()
    columns = ("reward", "kl", "pg_loss")
    assert [tuple(r[c] for c in columns) for r in by_run["GRPO", seed]] != \
        [tuple(r[c] for c in columns) for r in by_run["GRPO + AGGC", seed]]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reward_of_the_last_third_of_steps_beats_the_first_third(strategy, seed):
    rewards = [float(r["reward"]) for r in curves()[strategy, seed]]
    third = len(rewards) // 3
    first, last = statistics.fmean(rewards[:third]), statistics.fmean(rewards[-third:])
    assert last - first >= RISE, f"{strategy} seed {seed}: first third {first:.3f}, last third {last:.3f}"
