"""Paired comparisons: does a table's row differ from its reference row, on the same items?

The rows a paper compares (AGGC vs LoRA, GRPO + AGGC vs GRPO, an ablation setting vs the
main one) are scored on the same test items with the same seeds, so their difference is
measured item by item, from the per-item verdicts in the eval files (`samples`), not from
the two rows' means. A table config declares its comparisons (`compare:` in
conf/table/*.yaml: `row` and `reference`, two row labels); for each model and column:

- Δ: the mean over items of the per-item difference (row − reference), each item's
  difference averaged over the seeds both rows have (in the score's unit: percent).
- 95% interval: bootstrap over items (scipy.stats.bootstrap, BCa, paired). An item is
  resampled with all its seeds: the seeds share the test items, and an item hard in one
  seed is hard in the others, so resampling items independently per seed would be too
  narrow.
- p: two-sided paired permutation test over items (scipy.stats.permutation_test,
  permutation_type="samples": each item's row and reference values swap), i.e. the
  sign-flip test of the item differences; exact when the items are few.
- MDE: the smallest |Δ| this comparison detects with 80% power at α = 0.05 (two-sided),
  by the normal approximation at the observed spread of the item differences:
  (z₀.₉₇₅ + z₀.₈₀) · sd(d) / √items. None when every item difference is the same.
- p (seeds): a two-sided one-sample t-test of the per-seed Δs against 0 (scipy.stats.
  ttest_1samp; the seeds as the sample): whether the difference holds across training
  seeds, which the item-level test, conditional on the trained models, does not ask. None
  with fewer than two seeds or the same Δ on every seed.
- verdict: with the paper's Δ, "contradicts the paper" when the interval excludes it,
  "consistent with the paper" when it does not and p < α with the paper's sign, else
  "inconclusive at this n"; without one, "differs" (p < α) or "no difference found". A
  verdict other than these last two and "inconclusive" holds across seeds only when the
  seed-level test agrees (the per-seed Δs differ from 0, or from the paper's Δ for
  "contradicts", at α); otherwise it says "on these seeds only".
- A comparison whose item differences are all equal has no interval (a bootstrap over
  identical values has zero width whatever the number of items), so with a paper's Δ it is
  inconclusive.

Both resampling tests draw from a fixed seed: a table is reproduced byte for byte. The
test is conditional on the trained models (the seeds are fixed, not resampled): it asks
whether these models differ on this benchmark's item population; the per-seed Δs show how
much the difference moves with the training seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.80
N_RESAMPLES = 9999
RNG_SEED = 0  # both resampling tests: a table renders the same every time
BATCH = 500  # resamples at a time (memory: a GLUE dev set has up to 40k items)
METHOD = ("bootstrap over items (BCa, 9999 resamples; an item with all its seeds), p: paired permutation "
          "test over items (9999 resamples; ≤: none reached the observed Δ), p (seeds): t-test of the per-seed Δs "
          "against 0, MDE: smallest |Δ| detected with 80% power at α = 0.05 (normal approximation at the observed "
          "item spread); fixed random seed")


def item_values(result: dict) -> dict[str, float] | None:
    """A result's score per item, keyed by item id, such that their mean is the result's
    score; None when its file has no per-item verdicts, one it cannot read (no item id, a
    verdict that is no number) or its score is no mean over items (MCC, Pearson, an MT-Bench
    run with unrated turns)."""
    try:
        return _item_values(result)
    except (KeyError, TypeError, ValueError):  # a hand-edited or corrupt eval file: no paired statistic, the table renders
        return None


def _item_values(result: dict) -> dict[str, float] | None:
    samples = result.get("samples")
    settings = (result.get("eval_settings") or {}).get("eval") or {}
    kind = settings.get("kind")
    if not samples or "score" not in settings and kind != "mt_bench":  # MT-Bench has one score: the mean rating
        return None
    if kind == "lm_eval":
        key = _lm_eval_key(settings)
        values = {str(s["doc_id"]): 100 * float(s[key]) for s in samples if key in s}
    elif kind == "mt_bench":
        values = {str(s["question_id"]): float(np.mean([r["median"] for r in s["ratings"]]))
                  for s in samples if all(r["median"] is not None for r in s["ratings"])}
    elif kind == "glue" and settings["score"].endswith("accuracy"):
        split = settings["score"][: -len("accuracy")].rstrip("_") or "validation"
        values = {f"{s['split']}/{s['index']}": 100.0 * (s["prediction"] == s["label"]) for s in samples if s["split"] == split}
    else:
        return None
    if len(values) != len(samples) and kind != "glue" or not values:
        return None
    if not math.isclose(float(np.mean(list(values.values()))), float(result["score"]), rel_tol=1e-9, abs_tol=1e-6):
        return None  # not the score the table shows: no paired statistic stands beside it
    return values


def _lm_eval_key(settings: dict) -> str:
    """The sample field of the headline score: `reference_correct` for the authors' rule,
    else lm-eval's `<filter>_<metric>` (`<metric>` for filter none), as `per_sample` writes."""
    score = settings["score"]
    if score == "reference" and settings.get("reference"):
        return "reference_correct"
    metric, _, filt = settings["scores"][score].partition(",")
    return metric if filt in ("", "none") else f"{filt}_{metric}"


@dataclass(frozen=True)
class Paired:
    delta: float
    low: float | None  # None (and high): every item difference is the same (no spread to resample)
    high: float | None
    p: float
    p_seeds: float | None
    mde: float | None  # None: every item difference is the same (no spread to scale from)
    items: int
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]
    paper: float | None
    verdict: str

    @property
    def p_at_floor(self) -> bool:
        """p is the smallest the resampled permutation test gives (no permutation reached the
        observed Δ): the true p is at most this. An exact test (2^items ≤ resamples) has none."""
        return self.items > math.log2(N_RESAMPLES) and self.p <= 2 / (N_RESAMPLES + 1) + 1e-12


def compare(reference: dict[int, dict[str, float]], row: dict[int, dict[str, float]], paper: float | None) -> Paired | str:
    """The paired comparison of `row` against `reference` ({seed: {item: value}}) over the
    seeds both have; a reason (str) when there is none to make."""
    seeds = sorted(set(reference) & set(row))
    if not seeds:
        return "no seed with both results"
    items = sorted(reference[seeds[0]])
    if any(sorted(reference[s]) != items or sorted(row[s]) != items for s in seeds):
        return "scored on different items"
    if len(items) < 2:  # no spread to resample, no swap to permute (scipy refuses one observation)
        return "one item only: no interval, no test"
    ref = np.array([[reference[s][i] for i in items] for s in seeds])
    new = np.array([[row[s][i] for i in items] for s in seeds])
    return paired_statistics(ref, new, paper, tuple(seeds))


def paired_statistics(ref: np.ndarray, new: np.ndarray, paper: float | None, seeds: tuple[int, ...] = (0,)) -> Paired:
    """The comparison of two (seeds x items) arrays of per-item values (module docstring)."""
    x, y = ref.mean(axis=0), new.mean(axis=0)  # each item's value, averaged over seeds
    d = y - x
    delta = float(d.mean())
    rng = np.random.default_rng(RNG_SEED)

    def mean_difference(a, b, axis=-1):
        return np.mean(b - a, axis=axis)

    if not np.isfinite(d).all():
        raise ValueError("paired_statistics: every item value must be a finite number")
    if paper is not None and not math.isfinite(paper):
        raise ValueError(f"paired_statistics: the paper's delta must be a finite number, not {paper}")
    if all_equal(d):  # the same difference on every item: nothing to resample, no interval
        low = high = None
        p = 1.0 if delta == 0 else float(stats.permutation_test(
            (x, y), mean_difference, permutation_type="samples", vectorized=True, n_resamples=N_RESAMPLES,
            batch=BATCH, rng=rng).pvalue)
        mde = None
    else:
        ci = stats.bootstrap((x, y), mean_difference, paired=True, vectorized=True, n_resamples=N_RESAMPLES, batch=BATCH,
                             method="BCa", rng=rng).confidence_interval
        low, high = float(ci.low), float(ci.high)
        p = float(stats.permutation_test((x, y), mean_difference, permutation_type="samples", vectorized=True,
                                         n_resamples=N_RESAMPLES, batch=BATCH, rng=rng).pvalue)
        z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
        mde = float(z * d.std(ddof=1) / math.sqrt(len(d)))
    per_seed = tuple(float(v) for v in (new - ref).mean(axis=1))
    return Paired(delta, low, high, p, seed_level_p(per_seed), mde, len(d), seeds, per_seed, paper,
                  verdict(delta, low, high, p, paper, per_seed))


def all_equal(values) -> bool:
    """Equal up to float rounding (0.1 + 0.2 vs 0.3): a spread of rounding errors is none."""
    values = np.asarray(values, dtype=float)
    return bool(np.allclose(values, values[0], rtol=1e-9, atol=1e-9))


def seed_level_p(per_seed: tuple[float, ...], against: float = 0.0) -> float | None:
    """Two-sided one-sample t-test of the per-seed Δs against `against`; None with fewer than
    two seeds or no spread among them (the t statistic is undefined: no seed-to-seed variance
    was observed, which is no evidence that there is none)."""
    if len(per_seed) < 2 or all_equal(per_seed):
        return None
    return float(stats.ttest_1samp(per_seed, against).pvalue)


def verdict(delta: float, low: float | None, high: float | None, p: float, paper: float | None,
            per_seed: tuple[float, ...]) -> str:
    """The item-level verdict (module docstring), qualified "on these seeds only" where the
    seed-level test does not carry it."""
    def across(against: float) -> bool:
        p_seeds = seed_level_p(per_seed, against)
        return p_seeds is not None and p_seeds < ALPHA

    def scope(text: str, against: float) -> str:
        return text if across(against) else f"{text} on these seeds only"

    if paper is None:
        return scope("differs", 0.0) if p < ALPHA else "no difference found"
    if low is None:  # no interval: the paper's Δ can be neither placed inside nor outside it
        return "inconclusive at this n"
    if not low <= paper <= high:
        return scope("contradicts the paper", paper)
    if p < ALPHA and np.sign(delta) == np.sign(paper):
        return scope("consistent with the paper", 0.0)
    return "inconclusive at this n"
