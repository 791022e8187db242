"""Table 2 from result files: the paper's columns beside ours, an average over the eight
tasks per seed, and the rows the paper reports but the harness does not train."""

import json

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from aggc.paths import CONF_DIR, ROOT
from aggc.tables import collect, render

TASKS = ["glue_mnli", "glue_sst2", "glue_mrpc", "glue_cola", "glue_qnli", "glue_qqp", "glue_rte", "glue_stsb"]


def fake_run(root, strategy, clip, seed, scores):
    run = root / strategy / f"seed{seed}"
    (run / "eval").mkdir(parents=True)
    config = {"model": {"name": "deberta_v3_base"}, "strategy": {"name": strategy}, "clip": {"name": clip}, "seed": seed}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for bench, score in scores.items():
        (run / "eval" / f"{bench}.json").write_text(json.dumps({"benchmark": bench, "score": score}))


def table2_spec() -> dict:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("tables", overrides=["table=table2"]).table, resolve=True)


def row_of(markdown: str, label: str) -> list[str]:
    line = next(li for li in markdown.splitlines() if li.startswith("|") and li.split("|")[2].strip() == label)
    return [c.strip() for c in line.strip("|").split("|")]


def test_table2_renders_paper_beside_ours(tmp_path):
    # AGGC: seed 0 scores 80 on every task, seed 1 scores 90 -> per-seed means 80 and 90
    fake_run(tmp_path, "aggc", "aggc", 0, {t: 80.0 for t in TASKS})
    fake_run(tmp_path, "aggc", "aggc", 1, {t: 90.0 for t in TASKS})
    fake_run(tmp_path, "lora", "global", 0, {"glue_rte": 70.0})  # one task only: no average
    paths = render(table2_spec(), collect(tmp_path), ROOT / "results" / "paper", tmp_path / "out")
    md = paths["md"].read_text()
    header = [c.strip() for c in next(li for li in md.splitlines() if li.startswith("| Model")).strip("|").split("|")]
    assert header[2:5] == ["MNLI (ours)", "MNLI (paper)", "MNLI (Δ)"] and header[-3] == "ALL (mean) (ours)"
    table = md.split("**Paired comparisons**")[0]  # the rows, not the comparisons below them
    assert [r.split("|")[2].strip() for r in table.splitlines() if r.startswith("| deberta") or r.startswith("|  |")] == [
        "Full FT", "BitFit", "HAdapter", "PAdapter", "LoRA", "DoRA", "AGGC"]

    aggc = row_of(md, "AGGC")  # t(0.975, 1) = 12.706: half-width 12.706 * 7.071 / sqrt(2) = 63.53
    assert aggc[2:5] == ["85.00 ± 63.53 (n=2)", "90.59", "-5.59"]   # MNLI
    assert aggc[-3:] == ["85.00 ± 63.53 (n=2)", "90.1", "-5.10"]    # ALL: the paper's avg column
    hadapter = row_of(md, "HAdapter")
    assert hadapter[2:5] == ["paper only", "90.13", "—"] and hadapter[-3:] == ["paper only", "88.28", "—"]
    lora = row_of(md, "LoRA")
    assert lora[-3:] == ["—", "88.5", "—"] and "70.00 (n=1)" in lora
    assert "paper only: a method this harness does not implement" in md
    assert "paper only" in paths["tex"].read_text()
    csv_rows = paths["csv"].read_text().splitlines()
    assert "deberta_v3_base,AGGC,avg,85.0000,63.5310,2,90.1,-5.1000" in csv_rows
    # AGGC vs LoRA per task (not the mean column), the paper's Δ beside; no per-item verdicts in these files
    assert "| deberta_v3_base | RTE | AGGC | LoRA | — | — | — | — | +5.78 | no per-item scores" in md
    assert "| ALL (mean) |" not in md.split("**Paired comparisons**")[1]


def test_an_average_needs_every_task_of_a_seed(tmp_path):
    """A seed missing one task contributes nothing to ALL (a mean of seven would be another number)."""
    fake_run(tmp_path, "dora", "global", 0, {t: 80.0 for t in TASKS})
    fake_run(tmp_path, "dora", "global", 1, {t: 60.0 for t in TASKS[:-1]})
    md = render(table2_spec(), collect(tmp_path), ROOT / "results" / "paper", tmp_path / "out")["md"].read_text()
    assert row_of(md, "DoRA")[-3:] == ["80.00 (n=1)", "88.98", "-8.98"]


@pytest.mark.parametrize("column, paper", [("sst2", 96.33), ("stsb", 92.29), ("avg", 90.1)])
def test_paper_values_are_the_papers(column, paper):
    """The paper's AGGC row, looked up through the columns' `paper` names."""
    from aggc.tables import build, read_paper

    spec = table2_spec()
    rows = build(spec, [], read_paper(ROOT / "results" / "paper" / "table2.csv"))
    aggc = next(r for r in rows if r["label"] == "AGGC")
    bench = next(c["benchmark"] for c in spec["columns"] if c["paper"] == column)
    assert aggc["cells"][bench] == (None, paper)
