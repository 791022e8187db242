"""lm-eval hooks of `math.yaml`: every scorer of one response, from `aggc.evaluate.scorers`."""

from aggc.evaluate.scorers import math_scores


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return math_scores(results[0], doc["answer"])
