"""The .tex tables carry what the .md tables carry (ours with n, the paper's value, Δ, the
paired comparisons) and compile: every character outside ASCII is escaped or in math mode
(checked always), and pdflatex compiles each table where it is installed."""

import shutil
import subprocess

import numpy as np
import pytest
import yaml

from aggc import grid
from aggc.paths import CONF_DIR, ROOT
from aggc.tables import MISSING, PAIRED_HEADER, render, tex

TABLES = sorted(p.stem for p in (CONF_DIR / "table").glob("*.yaml"))


def records(spec: dict) -> list[dict]:
    """Three seeds of every trained row on every benchmark, with per-item verdicts."""
    rng, out = np.random.default_rng(0), []
    benchmarks = {b for col in spec["columns"] for b in col.get("mean_of", [col["benchmark"]])}
    for model in spec["models"]:
        for row in spec["rows"]:
            if row.get("paper_only"):
                continue
            config = {}
            for key, value in row.get("match", {}).items():
                *path, last = key.split(".")
                node = config
                for part in path:
                    node = node.setdefault(part, {})
                node[last] = value
            for seed in (0, 1, 2):
                for bench in benchmarks:
                    items = {str(i): 100.0 * (rng.random() < 0.4) for i in range(40)}
                    out.append({"model": model, "strategy": row["strategy"], "clip": row["clip"], "seed": seed,
                                "benchmark": bench, "score": float(np.mean(list(items.values()))), "config": config,
                                "items": items, "isolation": None, "commits": set(), "dirty": False, "run": "r"})
    return out


@pytest.mark.parametrize("tiny", [False, True], ids=["full", "tiny"])
@pytest.mark.parametrize("table", TABLES)
def test_tex_is_escaped_carries_the_markdown_content_and_compiles(table, tiny, tmp_path):
    raw = yaml.safe_load((CONF_DIR / "table" / f"{table}.yaml").read_text())
    if tiny and "tiny" not in raw:
        pytest.skip(f"{table} has no tiny version")
    spec = {k: v for k, v in (grid.tiny_version(raw) if tiny else raw).items() if k != "figure"}  # figures: test_figures
    paths = render(spec, records(spec), ROOT / "results" / "paper", tmp_path)
    text = paths["tex"].read_text()
    assert text.isascii(), [c for c in text if not c.isascii()]
    for line in text.splitlines():
        body = line.replace(r"\$", "").replace(r"\{", "").replace(r"\}", "")
        assert body.count("$") % 2 == 0 and body.count("{") == body.count("}"), line
    # what the Markdown carries: Δ column and n per cell, every paired comparison
    assert r"ours & paper & $\Delta$" in text and "($n=3$)" in text
    if spec.get("compare"):
        md = paths["md"].read_text()
        assert "**Paired comparisons**" in md
        pairs = [line for line in md.splitlines() if line.count("|") == 5 + len(PAIRED_HEADER) and not line.startswith("| Model")
                 and not line.startswith("|---")]
        assert pairs and all(tex(p.split("|")[3].strip()) + " & " + tex(p.split("|")[4].strip()) in text for p in pairs)
        assert all(MISSING not in p.split("|")[5] for p in pairs)  # every comparison has its Δ
    if shutil.which("pdflatex"):
        doc = tmp_path / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n\\input{"
                       + paths["tex"].name + "}\n\\end{document}\n")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:]


def test_tex_escapes_specials_and_refuses_unknown_characters():
    assert tex("a_b & 50% β ✓ × — Δ ±") == r"a\_b \& 50\% $\beta$ $\surd$ $\times$ --- $\Delta$ $\pm$"
    # text-mode < and > compile but print as ¡ and ¿ in pdflatex's default font (OT1)
    assert tex("r < 8, β > 0.5") == r"r $<$ 8, $\beta$ $>$ 0.5"
    with pytest.raises(ValueError, match="no LaTeX spelling"):
        tex("naïve")


def test_every_comparison_names_rows_of_its_table():
    """A table config's `compare` names two of its rows (full and tiny versions alike)."""
    for table in TABLES:
        raw = yaml.safe_load((CONF_DIR / "table" / f"{table}.yaml").read_text())
        for spec in [raw] + ([grid.tiny_version(raw)] if "tiny" in raw else []):
            labels = {r["label"] for r in spec["rows"]}
            assert all({c["row"], c["reference"]} <= labels for c in spec.get("compare", [])), table


def test_a_label_with_special_characters_keeps_its_cells_in_markdown_and_latex(tmp_path):
    """A row label, column label and model name with | and every LaTeX special character: each
    Markdown row keeps its header's number of cells (an unescaped | split one in two), and
    the .tex escapes LaTeX's specials (a | stays as typed)."""
    import re

    label = r"a|b_c%d&e#f$g\h^i~j{k}<l> β"
    spec = {"name": "x", "title": "T " + label, "paper_values": "table1.csv", "models": ["m_1|2"],
            "rows": [{"label": label, "strategy": "lora", "clip": "global", "paper": None},
                     {"label": "ref", "strategy": "aggc", "clip": "aggc", "paper": None}],
            "compare": [{"row": label, "reference": "ref"}], "columns": [{"benchmark": "b", "label": "B|1"}]}
    paths = render(spec, records(spec), ROOT / "results" / "paper", tmp_path)
    tables = [[line for line in block.splitlines() if line.startswith("|")] for block in paths["md"].read_text().split("\n\n")]
    for table in (t for t in tables if t):
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in table}
        assert len(widths) == 1, table
    text = paths["tex"].read_text()
    assert text.isascii()
    escaped = r"b\_c\%d\&e\#f\$g\textbackslash{}h\textasciicircum{}i\textasciitilde{}j\{k\}$<$l$>$ $\beta$"
    assert text.count(escaped) == 3  # title comment, table row, comparison row
