"""Table 5 (RLVR) renders beside the paper's values, with its reward / KL / PG-loss figure and
every run's curves in `table5_curves.csv`."""

import csv
import json

import yaml
from PIL import Image

from aggc.paths import CONF_DIR, RESULTS_DIR
from aggc.tables import collect, render


def fake_run(root, model, data, strategy, clip, seed, bench, score, curve=None):
    run = root / model / data / f"{strategy}-{clip}" / f"seed{seed}"
    (run / "eval").mkdir(parents=True)
    config = {"model": {"name": model}, "data": {"name": data}, "strategy": {"name": strategy}, "clip": {"name": clip}, "seed": seed}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "eval" / f"{bench}.json").write_text(json.dumps({"benchmark": bench, "score": score}))
    if curve:
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "reward": r, "kl": k, "pg_loss": p,
                                                               "frac_reward_zero_std": 0.5, "entropy": 1.0, "grad_norm": 2.0,
                                                               "factors": {"q_proj": 0.5, "v_proj": 1.0 - s / 10}}) + "\n"
                                                   for s, (r, k, p) in enumerate(curve)))
    return run


def test_table5_beside_the_paper_and_the_grpo_curves(tmp_path):
    runs = tmp_path / "runs"
    for seed, score in enumerate([79.0, 80.0, 81.0]):
        fake_run(runs, "qwen25_1_5b_instruct", "gsm8k_train", "grpo_aggc", "aggc_grpo", seed, "gsm8k_verl", score)
    fake_run(runs, "qwen25_3b_instruct", "math_train", "base", "none", 0, "math_verl", 66.0)
    curve = [(0.5, 0.0, 0.01), (0.6, 0.002, -0.02), (0.7, 0.004, 0.0)]
    fake_run(runs, "qwen25_3b_instruct", "gsm8k_train", "grpo", "global", 0, "gsm8k_verl", 88.0, curve)
    fake_run(runs, "qwen25_3b_instruct", "gsm8k_train", "grpo", "global", 1, "gsm8k_verl", 87.0, curve[1:])
    fake_run(runs, "qwen25_3b_instruct", "math_train", "grpo", "global", 0, "math_verl", 67.0, curve)  # not in the figure
    fake_run(runs, "qwen25_3b_instruct", "gsm8k_train", "grpo_aggc", "aggc_grpo", 0, "gsm8k_verl", 88.5, curve[::-1])

    spec = yaml.safe_load((CONF_DIR / "table" / "table5.yaml").read_text())
    paths = render(spec, collect(runs), RESULTS_DIR / "paper", tmp_path / "out")
    rows = [line for line in paths["md"].read_text().splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1:3] for line in rows[:3]] == [[" qwen25_3b_instruct ", " Base "], ["  ", " GRPO "], ["  ", " AGGC "]]
    #                      GSM8K: ours | paper | Δ               MATH: ours | paper | Δ
    assert rows[0].endswith("| — | 86.3 | — | 66.00 (n=1) | 66.1 | -0.10 |")
    assert rows[1].endswith("| 87.50 ± 6.35 (n=2) | 87.9 | -0.40 | 67.00 (n=1) | 66.9 | +0.10 |")
    assert rows[5].endswith("| 80.00 ± 2.48 (n=3) | 79.8 | +0.20 | — | 59.1 | — |")  # qwen25_1_5b_instruct AGGC
    assert rows[8].endswith("| — | 82.3 | — | — | 50.2 | — |")  # llama32_3b_instruct AGGC: not run yet
    assert "qwen25_1_5b_instruct,AGGC,gsm8k_verl,80.0000,2.4841,3,79.8,0.2000" in paths["csv"].read_text()
    # every step of every seed of the first model's runs on the first training set (gsm8k_train)
    with open(paths["curves.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    curves = [(r["strategy"], r["seed"], r["step"], r["reward"], r["frac_reward_zero_std"]) for r in rows]
    # what the run did besides its reward: entropy, the pre-clip norm, the clip factors' range over the groups
    assert [(r["entropy"], r["grad_norm"], r["clip_factor_min"], r["clip_factor_max"]) for r in rows[:2]] == \
        [("1.0", "2.0", "0.5", "1.0"), ("1.0", "2.0", "0.5", "0.9")]
    assert paths["curves.csv"].name == "table5_curves.csv"
    assert curves == [("GRPO", "0", "0", "0.5", "0.5"), ("GRPO", "0", "1", "0.6", "0.5"), ("GRPO", "0", "2", "0.7", "0.5"),
                      ("GRPO", "1", "0", "0.6", "0.5"), ("GRPO", "1", "1", "0.7", "0.5"),
                      ("GRPO + AGGC", "0", "0", "0.7", "0.5"), ("GRPO + AGGC", "0", "1", "0.6", "0.5"),
                      ("GRPO + AGGC", "0", "2", "0.5", "0.5")]
    with Image.open(paths["png"]) as image:
        assert paths["png"].name == "grpo_curves.png" and image.size[0] > 2 * image.size[1]  # three panels side by side
