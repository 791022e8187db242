"""Rendering a table from a directory of result files, checked against hand-computed Markdown."""

import json
import subprocess
import sys

import yaml
from omegaconf import OmegaConf

from hydra import initialize_config_dir

from aggc.paths import CONF_DIR, ROOT
from aggc.tables import collect, render, summarize

from ..synthetic import completed_run, evaluated, table_plan, train_config


def fake_run(root, strategy, clip, seed, scores, beta=0.95):
    run = root / f"{strategy}-{clip}-{beta}" / f"seed{seed}"
    (run / "eval").mkdir(parents=True)
    config = {"model": {"name": "mistral_7b"}, "strategy": {"name": strategy}, "seed": seed,
              "clip": {"name": clip, "beta": beta, "max_norm": 1.0}}  # the demo's LoRA row names its max_norm
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for bench, score in scores.items():
        (run / "eval" / f"{bench}.json").write_text(json.dumps({"benchmark": bench, "score": score}))
    return run


def test_ci95_is_student_t():
    s = summarize([70.0, 72.0, 74.0])
    # mean 72, sd 2, t(0.975, 2) = 4.302653 -> half-width 4.302653 * 2 / sqrt(3) = 4.968
    assert s.mean == 72.0 and s.n == 3 and abs(s.ci95 - 4.968) < 1e-3
    assert summarize([5.0]).ci95 is None


def synthetic_runs(root, table, scores, *overrides, **manifest):
    """COMPLETED, evaluated runs of `table`'s own cells: `scores(cell)` gives the cell's
    {benchmark: score} (empty: the cell is not run)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg, spec, dirs, evals = table_plan(table, root, *overrides)
        for cell, run in dirs.items():
            mine = scores(cell)
            if mine:
                completed_run(run, train_config(cfg, spec, cell), **manifest)
                for bench, score in mine.items():
                    evaluated(run, evals[bench], score)
    return dirs


def tables_cli(root, table, *overrides) -> str:
    """`python -m aggc.tables table=<table>` over root's runs: the Markdown table."""
    proc = subprocess.run(
        [sys.executable, "-m", "aggc.tables", f"runs_root={root}", f"out_dir={root / 'out'}",
         f"paper_dir={ROOT / 'results' / 'paper'}", f"table={table}", *overrides],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return (root / "out" / f"{overrides and 'mini' or table}.md").read_text()


def test_render_from_result_files_matches_hand_checked_markdown(tmp_path):
    scores = {("aggc", 0): {"gsm8k": 70.0, "math": 20.0}, ("aggc", 1): {"gsm8k": 72.0, "math": 21.0},
              ("aggc", 2): {"gsm8k": 74.0, "math": 22.0}, ("lora-none", 0): {"gsm8k": 69.0}}  # one seed, no MATH yet
    synthetic_runs(tmp_path, "table1", lambda c: scores.get((c.strategy if c.clip != "none" else "lora-none", c.seed), {})
                   if (c.model, c.data) == ("mistral_7b", "metamathqa") else {})
    md = tables_cli(tmp_path, "table1", "table.models=[mistral_7b]", "table.name=mini", "table.title=Mini",
                    "table.columns=[{benchmark: gsm8k, label: GSM8K}, {benchmark: math, label: MATH}]")
    expected = """# Mini

| Model | Strategy | GSM8K (ours) | GSM8K (paper) | GSM8K (Δ) | MATH (ours) | MATH (paper) | MATH (Δ) |
|---|---|---:|---:|---:|---:|---:|---:|
| mistral_7b | Full FT | — | 69.91 | — | — | 18.64 | — |
|  | LoRA | — | 69.5 | — | — | 20.08 | — |
|  | AGGC | 72.00 ± 4.97 (n=3) | 72.93 | -0.93 | 21.00 ± 2.48 (n=3) | 21.42 | -0.42 |
|  | LoRA (no clip) | 69.00 (n=1) | — | — | — | — | — |

—: no result yet (not run, or not evaluated), or no such row in the paper. 95% CI: Student t over seeds; n = seeds.
"""
    assert md.startswith(expected)
    # its comparisons (conf/table/table1.yaml): the paper's Δ beside each, ours only from per-item verdicts
    assert "| mistral_7b | GSM8K | AGGC | LoRA | — | — | — | — | +3.43 | no results | — | — | — |" in md
    assert "| mistral_7b | GSM8K | AGGC | LoRA (no clip) | — | — | — | — | — | no per-item scores" in md
    csv_text = (tmp_path / "out" / "mini.csv").read_text().splitlines()
    assert csv_text[0] == "model,strategy,benchmark,mean,ci95,n,paper,diff"
    assert "mistral_7b,AGGC,gsm8k,72.0000,4.9683,3,72.93,-0.9300" in csv_text
    tex = (tmp_path / "out" / "mini.tex").read_text()
    assert r"\toprule" in tex and r"$72.00 \pm 4.97$ ($n=3$) & 72.93 & -0.93" in tex and "---" in tex and tex.isascii()


def test_code_cells_whose_code_ran_guard_only_are_marked(tmp_path):
    """A code benchmark's cell with any result whose generated code ran under the sandbox's
    guard-only fallback (no bwrap) is marked † in Markdown and LaTeX, with a footnote; a
    cell whose code all ran under bwrap is not."""
    from aggc.tables import build, collect, latex, markdown

    for seed, isolation in enumerate(["bwrap", "guard-only"]):
        run = fake_run(tmp_path, "aggc", "aggc", seed, {})
        (run / "eval" / "humaneval.json").write_text(json.dumps({"score": 30.0 + seed, "isolation": "bwrap"}))
        (run / "eval" / "mbpp.json").write_text(json.dumps({"score": 40.0, "isolation": isolation}))
    spec = {"title": "Code", "models": ["mistral_7b"], "rows": [{"label": "AGGC", "strategy": "aggc", "clip": "aggc"}],
            "columns": [{"benchmark": "humaneval", "label": "HumanEval"}, {"benchmark": "mbpp", "label": "MBPP"}]}
    rows = build(spec, collect(tmp_path), [])
    md = markdown(spec, rows)
    assert "| mistral_7b | AGGC | 30.50 ± 6.35 (n=2) | — | — | 40.00 ± 0.00 (n=2)† | — | — |" in md
    assert "†: the generated code ran without the bwrap sandbox" in md
    tex = latex(spec, rows)
    assert r"$40.00 \pm 0.00$ ($n=2$)$^\dagger$" in tex and tex.count(r"$^\dagger$") == 2  # the cell and the note


def test_sweep_rows_match_on_config_keys(tmp_path):
    """Table 4's rows are one sweep told apart by `clip.beta`: each row averages only its
    own beta's runs and sits beside the paper's value for that beta."""
    scores = {("0.1", 0): 10.0, ("0.1", 1): 12.0, ("0.9", 0): 30.0, ("0.9", 1): 32.0}
    synthetic_runs(tmp_path, "table4", lambda c: {"math": scores[(dict(c.match)["clip.beta"], c.seed)]}
                   if (dict(c.match)["clip.beta"], c.seed) in scores else {})
    rows = {line.split("|")[2].strip(): line for line in tables_cli(tmp_path, "table4").splitlines()
            if line.startswith("| ") and "β" in line}
    assert "| 11.00 ± 12.71 (n=2) | 20.76 | -9.76 |" in rows["β = 0.1"]
    assert "| 31.00 ± 12.71 (n=2) | 21.22 | +9.78 |" in rows["β = 0.9"]
    assert "| — | 21.3 | — |" in rows["β = 0.7"]


def test_group_norm_figure_from_metrics(tmp_path):
    """The LoRA-vs-AGGC figure is drawn from the runs' metrics.jsonl (a real PNG)."""
    for strategy, clip in (("lora", "global"), ("aggc", "aggc")):
        run = fake_run(tmp_path, strategy, clip, 0, {"gsm8k": 50.0})
        records = [{"step": t, "post_norms": {"q_proj": 1.0 + t, "v_proj": 2.0 / (1 + t)}} for t in range(5)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = yaml.safe_load((ROOT / "conf" / "table" / "demo.yaml").read_text())
    spec["models"] = ["mistral_7b"]
    paths = render(spec, collect(tmp_path), ROOT / "results" / "paper", tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_figure_panels_put_each_row_at_its_swept_value():
    """figure6: a row joins the series its label starts with, at its `match` value of
    `figure.x`; the paper's points and the reference row (Full FT) come along."""
    from hydra import compose, initialize_config_dir

    from aggc.paths import CONF_DIR
    from aggc.tables import build, read_paper, sweep_panels

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        spec = OmegaConf.to_container(compose("tables", overrides=["table=figure6"]).table, resolve=True)
    records = [
        {"model": "mistral_7b", "strategy": "aggc", "clip": "aggc", "benchmark": "gsm8k", "score": s, "seed": i,
         "run": f"r{i}", "config": {"model": {"lora_r": 128}}}
        for i, s in enumerate([72.0, 74.0])
    ] + [{"model": "mistral_7b", "strategy": "lora", "clip": "global", "benchmark": "gsm8k", "score": 60.0, "seed": 0,
          "run": "l", "config": {"model": {"lora_r": 4}}}]
    rows = build(spec, records, read_paper(ROOT / "results" / "paper" / "figure6.csv"))
    panels = {p["title"]: p for p in sweep_panels(spec, rows)}
    assert list(panels) == ["llama2_7b: GSM8K", "llama2_7b: MATH", "mistral_7b: GSM8K", "mistral_7b: MATH"]
    gsm8k = panels["mistral_7b: GSM8K"]
    aggc = {x: point for x, *point in gsm8k["series"]["AGGC"]}
    assert sorted(aggc) == [1, 2, 4, 8, 16, 32, 64, 128]
    mean, ci, paper = aggc[128]
    assert mean == 73.0 and ci > 0 and paper == 72.93
    assert aggc[64] == [None, None, None]
    assert {x: p[:1] for x, *p in gsm8k["series"]["LoRA"] if p[0] is not None} == {4: [60.0]}
    assert gsm8k["reference"] == ("Full FT", None, 69.91)
    assert panels["llama2_7b: GSM8K"]["reference"] == ("Full FT", None, None)



def test_table3_rows_are_told_apart_by_the_schedule_kind(tmp_path):
    """Static and time-varying multipliers are one strategy, told apart by
    `clip.schedule.kind`; each sits beside the paper's × / ✓ row."""
    scores = {("none", 0): 70.0, ("none", 1): 71.0, ("linear", 0): 72.0, ("linear", 1): 74.0}
    synthetic_runs(tmp_path, "table3", lambda c: {"gsm8k": scores[(dict(c.match)["clip.schedule.kind"], c.seed)]}
                   if c.model == "mistral_7b" and c.seed < 2 else {})
    table = tables_cli(tmp_path, "table3")
    assert "| mistral_7b | static (×) | 70.50 ± 6.35 (n=2) | 71.39 | -0.89 |" in table
    assert "|  | time-varying (✓) | 73.00 ± 12.71 (n=2) | 72.93 | +0.07 |" in table


def test_table8_reads_peak_gpu_memory_from_the_manifests(tmp_path):
    """Table 8: a finished run's manifest peak (MiB) is its memory in GiB, beside the
    paper's GB; an unfinished run's manifest does not count."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg, spec, dirs, _ = table_plan("table8", tmp_path)
        grpo = {c.seed: (c, run) for c, run in dirs.items() if (c.model, c.strategy) == ("qwen25_3b_instruct", "grpo")}
        for seed, mib in ((0, 44 * 1024), (1, 46 * 1024)):
            completed_run(grpo[seed][1], train_config(cfg, spec, grpo[seed][0]), peak_gpu_memory_mb=mib)
        unfinished = grpo[2][1]
        completed_run(unfinished, train_config(cfg, spec, grpo[2][0]), peak_gpu_memory_mb=1.0)
        (unfinished / "COMPLETED").unlink()
    table = tables_cli(tmp_path, "table8")
    assert "| qwen25_3b_instruct | GRPO | 45.00 ± 12.71 (n=2) | 43.65 | +1.35 |" in table
    assert "|  | AGGC | — | 44.26 | — |" in table
