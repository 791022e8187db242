"""lm-eval hooks of `gsm8k_verl.yaml` and `math_verl.yaml` (Table 5): verl's rules, from
`aggc.evaluate.scorers`, the same functions that are GRPO's reward under `train.grpo.protocol=verl`."""

from aggc.evaluate.scorers import verl_gsm8k_flexible_answer, verl_gsm8k_reward, verl_math_reward


def gsm8k_process_results(doc: dict, results: list[str]) -> dict[str, float]:
    gold = doc["answer"].split("####")[-1].strip()
    flexible = verl_gsm8k_flexible_answer(results[0])
    return {"verl": verl_gsm8k_reward(results[0], gold), "verl_flexible": float(flexible == gold.replace(",", ""))}


def math_process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"verl": verl_math_reward(results[0], doc["answer"])}
