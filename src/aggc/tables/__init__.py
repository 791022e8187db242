"""The tabulate stage: run directories in, the paper's tables out (Markdown, LaTeX, CSV).

Reads only files the earlier stages wrote: each run's `config.yaml`, `manifest.json` and
`eval/<benchmark>.json` (`score`; for code benchmarks `isolation`). A table cell is the
runs of one configuration (its cell id, `aggc.identity`: the row's strategy, clip and
match keys, the model, training set and the table's recipe), one per seed: a cell never
takes another table's sweep runs, and two tables that need the same configuration share
its runs. Scores of one cell are aggregated over seeds as mean ± 95% CI (Student t, n
shown); the paper's value and the difference stand beside each. A cell without results
renders as "—", never as 0; a cell with a code result whose generated code ran without the
bwrap sandbox is marked "†"; a cell whose runs were trained by several commits, or by
uncommitted code, is marked "‡". The rows a table compares (its config's `compare`) are
compared item by item below the table (`paired`: Δ, interval, p, verdict), from the
per-item verdicts in the eval files; also in `<name>.paired.csv`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from scipy import stats

from ..identity import cell_id, layout
from .figures import CURVE_COLUMNS, group_norm_figure, grpo_curves, grpo_figure, norm_figure, sweep_figure
from .paired import METHOD, Paired, compare, item_values

MISSING = "—"
GUARD_ONLY = "guard-only"  # aggc.evaluate.sandbox.GUARD_ONLY (not imported: that package loads torch)
GUARD_MARK = "†"
GUARD_NOTE = "the generated code ran without the bwrap sandbox (guard-only; README, Security)."
MIXED_MARK = "‡"
MIXED_NOTE = "its runs were trained by more than one commit, or by uncommitted code (their manifests' starts)."
PAPER_ONLY = "paper only"  # a row the paper reports and this harness does not train (Table 2's HAdapter, PAdapter)
# Memory "benchmarks" read from a run's manifest (MiB there, GiB here): peak GPU memory
# allocated by torch, and the training process's peak RSS (what a CPU run can report).
MEMORY = {"gpu_memory_gb": "peak_gpu_memory_mb", "peak_rss_gb": "peak_rss_mb"}


@dataclass(frozen=True)
class Summary:
    mean: float
    ci95: float | None  # half-width; None with one seed
    n: int
    guard_only: bool = False  # some of its code ran under the sandbox's guard-only fallback
    mixed: bool = False  # its runs come from several commits, or from uncommitted code

    def text(self) -> str:
        mark = (GUARD_MARK if self.guard_only else "") + (MIXED_MARK if self.mixed else "")
        if self.ci95 is None:
            return f"{self.mean:.2f} (n=1){mark}"
        return f"{self.mean:.2f} ± {self.ci95:.2f} (n={self.n}){mark}"


def summarize_records(matched: list[dict]) -> Summary:
    """The summary of one cell's records, with its marks."""
    commits = {c for r in matched for c in r.get("commits", ())}
    mixed = len(commits) > 1 or any(r.get("dirty") for r in matched)
    return replace(summarize([r["score"] for r in matched], any(r.get("isolation") == GUARD_ONLY for r in matched)),
                   mixed=mixed)


def summarize(values: list[float], guard_only: bool = False) -> Summary:
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Summary(mean, None, n, guard_only)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Summary(mean, half, n, guard_only)


def collect(runs_root: Path) -> list[dict]:
    """One record per (run, benchmark): model, strategy, clip, seed, benchmark, score, the
    code sandbox's isolation (code benchmarks; else None), the per-item scores (`items`,
    `paired.item_values`; None without them) and the run's whole config (rows of a sweep
    match on its keys). A finished run's peak memory (manifest.json) is a record
    too, under the benchmarks in MEMORY (Table 8)."""
    records = []
    for config_path in sorted(Path(runs_root).rglob("config.yaml")):
        run = config_path.parent
        cfg = yaml.safe_load(config_path.read_text())
        results = {result.stem: json.loads(result.read_text()) for result in sorted(run.glob("eval/*.json"))}
        scores = {bench: float(result["score"]) for bench, result in results.items()}
        manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {}
        if (run / "COMPLETED").exists():
            scores.update({bench: manifest[key] / 1024 for bench, key in MEMORY.items() if key in manifest})
        starts = manifest.get("starts", [])
        records += [{"model": cfg["model"]["name"], "strategy": cfg["strategy"]["name"], "clip": cfg["clip"]["name"],
                     "seed": cfg["seed"], "benchmark": bench, "score": score, "run": str(run), "config": cfg,
                     "cell_id": cell_id(cfg), "isolation": results.get(bench, {}).get("isolation"),
                     "items": item_values(results[bench]) if bench in results else None,
                     "commits": {s["git_commit"] for s in starts}, "dirty": any(s["git_dirty"] for s in starts)}
                    for bench, score in scores.items()]
    return records


def config_value(cfg: dict, dotted: str):
    """`clip.schedule.kind` looked up in a nested config dict (None when absent)."""
    for key in dotted.split("."):
        if not isinstance(cfg, dict) or key not in cfg:
            return None
        cfg = cfg[key]
    return cfg


def _same(a, b) -> bool:
    """Config values compare as text, so 0.1 from YAML equals "0.1" from a CSV."""
    return str(a) == str(b)


def row_matches(record: dict, model: str, row: dict) -> bool:
    """Whether a record is a run of this row's model, strategy, clip and match keys. Within
    a table's own cells (`write`'s `cell_ids`) this is the row's cell on each training set."""
    return (record["model"] == model and record["strategy"] == row["strategy"] and record["clip"] == row["clip"]
            and all(_same(config_value(record["config"], k), v) for k, v in row.get("match", {}).items()))


def read_paper(path: Path) -> list[dict]:
    """The paper's rows. Key columns: `model`, `strategy` and any config key (a dotted
    name such as `clip.beta`); every other non-empty cell is a number."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [{k: v if k in ("model", "strategy") or "." in k else float(v) for k, v in r.items() if v != ""} for r in rows]


def paper_value(paper: list[dict], model: str, row: dict, bench: str) -> float | None:
    """The paper's number for a row: same model, the row's `paper` strategy, and the row's
    `match` values on whichever key columns the paper's file has."""
    if not row.get("paper"):
        return None
    for p in paper:
        keys = [k for k in p if "." in k]
        if p["model"] == model and p["strategy"] == row["paper"] and all(_same(p[k], row.get("match", {}).get(k)) for k in keys):
            return p.get(bench)
    return None


def build(spec: dict, records: list[dict], paper: list[dict]) -> list[dict]:
    """The table as rows of cells: {model, label, cells: {benchmark: (Summary|None, paper|None)}}."""
    for model in spec["models"]:
        for r in records:  # rows sharing a strategy and clip tell their runs apart by `match`
            owners = [row["label"] for row in spec["rows"] if not row.get("paper_only") and row_matches(r, model, row)]
            if len(owners) > 1:
                raise ValueError(f"table={spec.get('name')}: the run {r.get('run')} is a run of rows {owners}: a row "
                                 "sharing another's strategy and clip needs a `match` value the other does not have")
    rows = []
    for model in spec["models"]:
        for row in spec["rows"]:
            cells = {}
            for col in spec["columns"]:
                bench = col["benchmark"]
                if row.get("paper_only"):
                    ours = None
                elif "mean_of" in col:  # e.g. Table 2's ALL: the mean over the tasks, per seed
                    ours = mean_over(records, model, row, col["mean_of"])
                else:
                    matched = [r for r in records if row_matches(r, model, row) and r["benchmark"] == bench]
                    ours = summarize_records(matched) if matched else None
                # `paper`: the paper file's column, where its name differs from the benchmark's
                cells[bench] = (ours, paper_value(paper, model, row, col.get("paper", bench)))
            rows.append({"model": model, "label": row["label"], "cells": cells, "paper_only": bool(row.get("paper_only"))})
    return rows


def mean_over(records: list[dict], model: str, row: dict, benchmarks: list[str]) -> Summary | None:
    """A row's mean over `benchmarks` per seed (only seeds that have every one of them),
    summarised over seeds."""
    by_seed: dict[int, dict[str, list[float]]] = {}
    for r in records:
        if row_matches(r, model, row) and r["benchmark"] in benchmarks:
            by_seed.setdefault(r["seed"], {}).setdefault(r["benchmark"], []).append(r["score"])
    values = [statistics.fmean(statistics.fmean(v) for v in scores.values())
              for scores in by_seed.values() if len(scores) == len(set(benchmarks))]
    return summarize(values) if values else None


def comparisons(spec: dict, records: list[dict], paper: list[dict]) -> list[dict]:
    """The table's paired comparisons (`compare`: each `row` against its `reference`, two
    row labels), per model and column: {model, column, row, reference, paper (the paper's
    Δ), result: Paired, or the reason there is none}. Columns that average others (`mean_of`) are left out."""
    rows = {r["label"]: r for r in spec["rows"]}
    out = []
    for model in spec["models"]:
        for pair in spec.get("compare", []):
            missing = [pair[k] for k in ("row", "reference") if pair[k] not in rows]
            if missing:
                raise ValueError(f"table={spec['name']}: compare names no row {missing[0]!r}; rows: {', '.join(rows)}")
            row, ref = rows[pair["row"]], rows[pair["reference"]]
            for col in spec["columns"]:
                if "mean_of" in col:
                    continue
                bench = col["benchmark"]
                paper_row, paper_ref = (paper_value(paper, model, r, col.get("paper", bench)) for r in (row, ref))
                theirs = paper_row - paper_ref if paper_row is not None and paper_ref is not None else None
                out.append({"model": model, "column": col["label"], "benchmark": bench, "row": row["label"],
                            "reference": ref["label"], "paper": theirs,
                            "result": _compare(records, model, ref, row, bench, theirs)})
    return out


def _compare(records: list[dict], model: str, ref: dict, row: dict, bench: str, paper: float | None) -> Paired | str:
    per_seed = []
    for r in (ref, row):
        matched = [x for x in records if row_matches(x, model, r) and x["benchmark"] == bench]
        if not matched:
            return "no results"
        if any(x["items"] is None for x in matched):
            return "no per-item scores (the score is no mean over items, or its file has none)"
        if len({x["seed"] for x in matched}) < len(matched):  # e.g. a row's runs on two training sets, one benchmark
            return f"{r['label']}: several results of one seed"
        per_seed.append({x["seed"]: x["items"] for x in matched})
    return compare(*per_seed, paper)


def _ours(row: dict, ours: Summary | None) -> str:
    return ours.text() if ours else PAPER_ONLY if row.get("paper_only") else MISSING


def _diff(ours: Summary | None, theirs: float | None) -> str:
    return f"{ours.mean - theirs:+.2f}" if ours is not None and theirs is not None else MISSING


def markdown(spec: dict, rows: list[dict], pairs: list[dict] = ()) -> str:
    cols = spec["columns"]
    header = ["Model", "Strategy"] + [f"{_md(c['label'])} ({part})" for c in cols for part in ("ours", "paper", "Δ")]
    lines = [f"# {spec['title']}", "", "| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (3 * len(cols))]
    previous = None
    for row in rows:
        model = row["model"] if row["model"] != previous else ""
        previous = row["model"]
        cells = []
        for c in cols:
            ours, theirs = row["cells"][c["benchmark"]]
            cells += [_ours(row, ours), f"{theirs:g}" if theirs is not None else MISSING, _diff(ours, theirs)]
        lines.append("| " + " | ".join([_md(model), _md(row["label"]), *cells]) + " |")
    lines += ["", f"{MISSING}: no result yet (not run, or not evaluated), or no such row in the paper. "
              "95% CI: Student t over seeds; n = seeds."]
    if any(row.get("paper_only") for row in rows):
        lines[-1] += f" {PAPER_ONLY}: a method this harness does not implement; the paper's number alone."
    if _any(rows, "guard_only"):
        lines[-1] += f" {GUARD_MARK}: {GUARD_NOTE}"
    if _any(rows, "mixed"):
        lines[-1] += f" {MIXED_MARK}: {MIXED_NOTE}"
    if pairs:
        lines += ["", "**Paired comparisons** (row − reference, same items and seeds):", "",
                  "| Model | Benchmark | Row | Reference | " + " | ".join(PAIRED_HEADER) + " |", "|---|---|---|---|" + "---:|" * 5 + "---|" + "---:|" * 3]
        for c in pairs:
            lines.append("| " + " | ".join([*map(_md, [c["model"], c["column"], c["row"], c["reference"]]), *_paired_cells(c)])
                         + " |")
        lines += ["", "Paired comparisons: Δ = mean over items of the row's minus the reference's item score, each item "
                  f"averaged over the seeds both have; 95% CI: {METHOD}. {VERDICT_RULE}"]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """A config's text (a label, a model name) as one Markdown table cell: a | in it would split the cell."""
    return str(text).replace("|", r"\|")


PAIRED_HEADER = ["Δ (ours)", "95% CI", "p", "p (seeds)", "Δ (paper)", "Verdict", "MDE", "Items × seeds", "Δ per seed"]
VERDICT_RULE = ("Verdict: the paper's Δ outside the CI contradicts it; inside it with p < 0.05 and the same sign is "
                "consistent; otherwise inconclusive at this n; without the paper's Δ: differs (p < 0.05) or no difference "
                "found. p tests these trained models over the items; \"on these seeds only\": the seed-level t-test (p "
                "(seeds), against 0; for contradicts, against the paper's Δ) does not carry the verdict across training "
                "seeds, or has no spread to test (README, Paired comparisons).")


def _paired_cells(comparison: dict) -> list[str]:
    result = comparison["result"]
    if isinstance(result, str):  # the paper's Δ still shows
        paper = _signed(comparison["paper"]) if comparison["paper"] is not None else MISSING
        return [MISSING, MISSING, MISSING, MISSING, paper, result, MISSING, MISSING, MISSING]
    return [_signed(result.delta), f"[{_signed(result.low)}, {_signed(result.high)}]" if result.low is not None else MISSING,
            ("≤" if result.p_at_floor else "") + f"{result.p:.4f}",
            f"{result.p_seeds:.4f}" if result.p_seeds is not None else MISSING,
            _signed(result.paper) if result.paper is not None else MISSING, result.verdict,
            f"{result.mde:.2f}" if result.mde is not None else MISSING, f"{result.items} × {len(result.seeds)}",
            ", ".join(_signed(d) for d in result.per_seed)]


def tex_paired_cells(comparison: dict) -> list[str]:
    """`_paired_cells` in LaTeX: a number's minus as a minus sign, a reason's hyphen kept."""
    return [tex(re.sub(r"-(?=\d)", "−", v)) for v in _paired_cells(comparison)]


def _signed(value: float) -> str:
    """A difference with its sign, two decimals; one that rounds to zero is +0.00, not -0.00."""
    text = f"{value:+.2f}"
    return "+0.00" if text == "-0.00" else text


def _any(rows: list[dict], mark: str) -> bool:
    return any(ours is not None and getattr(ours, mark) for row in rows for ours, _ in row["cells"].values())


# Characters a table's text may carry, in LaTeX that pdflatex compiles without extra packages
# (booktabs aside); any other non-ASCII character is refused (`tex`).
TEX_CHARS = {"β": r"$\beta$", "α": r"$\alpha$", "Δ": r"$\Delta$", "✓": r"$\surd$", "×": r"$\times$", "±": r"$\pm$",
             "−": "$-$", "—": "---", "–": "--", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "≥": r"$\geq$", "≤": r"$\leq$",
             "·": r"$\cdot$", "√": r"$\surd$", "₀": "$_0$", "…": r"\ldots{}", "’": "'"}
TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "<": "$<$", ">": "$>$"}  # pdflatex's default OT1 font prints text-mode < and > as ¡ and ¿


def tex(text: str) -> str:
    """Plain text as LaTeX: its special characters escaped, the non-ASCII ones it may carry
    (TEX_CHARS) in math mode or as macros; any other non-ASCII character is an error."""
    out = []
    for ch in str(text):
        if ch in TEX_SPECIAL:
            out.append(TEX_SPECIAL[ch])
        elif ch in TEX_CHARS:
            out.append(TEX_CHARS[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            raise ValueError(f"{text!r}: {ch!r} has no LaTeX spelling here (aggc.tables.TEX_CHARS)")
    return "".join(out)


def _tex_ours(row: dict, ours: Summary | None) -> str:
    if ours is None:
        return tex(_ours(row, ours))
    cell = rf"${ours.mean:.2f} \pm {ours.ci95:.2f}$" if ours.ci95 is not None else f"{ours.mean:.2f}"
    cell += f" ($n={ours.n}$)"
    return cell + (r"$^\dagger$" if ours.guard_only else "") + (r"$^\ddagger$" if ours.mixed else "")


def latex(spec: dict, rows: list[dict], pairs: list[dict] = ()) -> str:
    """The Markdown table's content as LaTeX tabulars (booktabs): ours with n, the paper's
    value and Δ per column; then the paired comparisons; notes as comments."""
    cols = spec["columns"]
    out = [f"% {tex(spec['title'])}", r"\begin{tabular}{ll" + "rrr" * len(cols) + "}", r"\toprule",
           "Model & Strategy & " + " & ".join(rf"\multicolumn{{3}}{{c}}{{{tex(c['label'])}}}" for c in cols) + r" \\",
           " & & " + " & ".join(r"ours & paper & $\Delta$" for _ in cols) + r" \\", r"\midrule"]
    previous = None
    for row in rows:
        model = tex(row["model"]) if row["model"] != previous else ""
        if previous is not None and row["model"] != previous:
            out.append(r"\midrule")
        previous = row["model"]
        cells = []
        for c in cols:
            ours, theirs = row["cells"][c["benchmark"]]
            cells += [_tex_ours(row, ours), f"{theirs:g}" if theirs is not None else tex(MISSING), tex(_diff(ours, theirs))]
        out.append(" & ".join([model, tex(row["label"]), *cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}",
            "% " + tex(f"{MISSING}: no result yet, or no such row in the paper. 95% CI: Student t over seeds; n = seeds.")]
    if _any(rows, "guard_only"):
        out.append(r"% $^\dagger$: " + tex(GUARD_NOTE))
    if _any(rows, "mixed"):
        out.append(r"% $^\ddagger$: " + tex(MIXED_NOTE))
    if pairs:
        out += ["", "% " + tex("Paired comparisons (row − reference, same items and seeds)"),
                r"\begin{tabular}{llllrrrrrlrrr}", r"\toprule",
                " & ".join(tex(h) for h in ["Model", "Benchmark", "Row", "Reference", *PAIRED_HEADER]) + r" \\", r"\midrule"]
        for c in pairs:
            out.append(" & ".join([*(tex(v) for v in [c["model"], c["column"], c["row"], c["reference"]]),
                                   *tex_paired_cells(c)]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", "% " + tex(f"95% CI: {METHOD}."), "% " + tex(VERDICT_RULE)]
    return "\n".join(out) + "\n"


def csv_rows(spec: dict, rows: list[dict]) -> list[list]:
    table = [["model", "strategy", "benchmark", "mean", "ci95", "n", "paper", "diff"]]
    for row in rows:
        for c in spec["columns"]:
            ours, theirs = row["cells"][c["benchmark"]]
            table.append([row["model"], row["label"], c["benchmark"],
                          f"{ours.mean:.4f}" if ours else "", f"{ours.ci95:.4f}" if ours and ours.ci95 is not None else "",
                          ours.n if ours else 0, theirs if theirs is not None else "",
                          f"{ours.mean - theirs:.4f}" if ours and theirs is not None else ""])
    return table


def paired_csv_rows(pairs: list[dict]) -> list[list]:
    """The paired comparisons, one line each (`note`: why a comparison has no numbers)."""
    table = [["model", "benchmark", "row", "reference", "delta", "ci_low", "ci_high", "p", "p_at_floor", "p_seeds", "paper_delta",
              "verdict", "mde", "items", "seeds", "delta_per_seed", "note"]]
    def number(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else ""

    for c in pairs:
        head, r = [c["model"], c["benchmark"], c["row"], c["reference"]], c["result"]
        if isinstance(r, str):
            table.append([*head, "", "", "", "", "", "", number(c["paper"]), "", "", 0, "", "", r])
            continue
        table.append([*head, *map(number, (r.delta, r.low, r.high, r.p)), str(r.p_at_floor).lower(),
                      *map(number, (r.p_seeds, r.paper)), r.verdict, number(r.mde),
                      r.items, " ".join(map(str, r.seeds)), " ".join(map(number, r.per_seed)), ""])
    return table


def write(spec: dict, runs_root: Path, paper_dir: Path, out_dir: Path, cell_ids: set[str], evals: dict) -> dict[str, Path]:
    """The table of `spec` from `runs_root` (`select`, then `render`)."""
    return render(spec, select(spec, runs_root, cell_ids, evals), paper_dir, out_dir)


def select(spec: dict, runs_root: Path, cell_ids: set[str], evals: dict) -> list[dict]:
    """The records a table is made of: the runs of its own cells (`cell_ids`) and the
    results that scored their current models under the table's evaluation configs (`evals`,
    per benchmark): `aggc.grid.table_cells`. Stale results are left out and counted."""
    from ..evaluate import eval_settings, is_fresh

    # `where`: config values every run of the table must have (e.g. Table 8: the GSM8K runs).
    mine = [r for r in collect(runs_root) if r["cell_id"] in cell_ids and _in_place(r, runs_root)
            and all(_same(config_value(r["config"], k), v) for k, v in spec.get("where", {}).items())]
    records = [r for r in mine if r["benchmark"] in MEMORY or (
        r["benchmark"] in evals and is_fresh(Path(r["run"]) / "eval" / f"{r['benchmark']}.json", Path(r["run"]),
                                             eval_settings(evals[r["benchmark"]], Path(r["run"]))))]
    if len(records) < len(mine):
        print(f"{spec['name']}: left out {len(mine) - len(records)} results that scored another model (retrained since) or "
              "under other evaluation settings (e.g. eval.limit); the grid evaluates them again", flush=True)
    return records


def _in_place(record: dict, runs_root: Path) -> bool:
    """A run counts only in its own directory (`aggc.identity.run_dir` of its config), so a
    copy (a backup folder, a hand-made hydra.run.dir) is never a second seed."""
    cfg = record["config"]
    own = layout(runs_root, cfg["model"]["name"], cfg["data"]["name"], cfg["strategy"]["name"], cfg["clip"]["name"],
                 record["cell_id"], cfg["seed"])
    return Path(record["run"]).resolve() == own.resolve()


def render(spec: dict, records: list[dict], paper_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Markdown, LaTeX, CSV, the paired comparisons' CSV (and the table's figure) from `records`."""
    paper = read_paper(paper_dir / spec["paper_values"])
    rows, pairs = build(spec, records, paper), comparisons(spec, records, paper)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{spec['name']}.{ext}" for ext in ("md", "tex", "csv")}
    paths["md"].write_text(markdown(spec, rows, pairs))
    paths["tex"].write_text(latex(spec, rows, pairs))
    with open(paths["csv"], "w", newline="") as f:
        csv.writer(f).writerows(csv_rows(spec, rows))
    if pairs:
        paths["paired.csv"] = out_dir / f"{spec['name']}.paired.csv"
        with open(paths["paired.csv"], "w", newline="") as f:
            csv.writer(f).writerows(paired_csv_rows(pairs))
    figure = spec.get("figure")
    if figure and figure.get("kind") == "norms":  # Figures 1, 2, 7: a row of panels per model
        runs = {m: dict(found) for m in spec["models"] if (found := figure_panels(spec, records, m))}
        if runs:
            paths["png"] = norm_figure(runs, figure, out_dir / figure["file"])
    elif figure and figure.get("kind", "group_norms") == "sweep":
        paths["png"] = sweep_figure(sweep_panels(spec, rows), figure["x_label"], out_dir / figure["file"])
    elif figure and figure.get("kind") == "grpo":  # Figures 4, 5: every seed's curves, written out and drawn
        runs = grpo_runs(spec, records)
        if runs:
            curves = grpo_curves(runs)
            paths["curves.csv"] = out_dir / f"{spec['name']}_curves.csv"
            with open(paths["curves.csv"], "w", newline="") as f:
                writer = csv.DictWriter(f, CURVE_COLUMNS)
                writer.writeheader()
                writer.writerows(curves)
            paths["png"] = grpo_figure(curves, out_dir / figure["file"])
    elif figure:
        panels = figure_panels(spec, records)
        if panels:
            paths["png"] = group_norm_figure(panels, out_dir / figure["file"])
    return paths


def grpo_runs(spec: dict, records: list[dict]) -> list[tuple[str, int, Path]]:
    """(label, seed, run dir) of every seed of each GRPO figure entry: the first model's runs
    on its first training set by path (Table 5: gsm8k_train); nothing unless every entry has a run."""
    runs = []
    for panel in spec["figure"]["panels"]:
        seeds = {Path(r["run"]): r["seed"] for r in records if row_matches(r, spec["models"][0], panel)}
        if seeds:
            data = min(run.parent.parent for run in seeds)  # <runs_root>/<model>/<data>/<cell>/seed<N>
            runs += sorted((panel["label"], seed, run) for run, seed in seeds.items() if run.parent.parent == data)
    return runs if {label for label, _, _ in runs} == {p["label"] for p in spec["figure"]["panels"]} else []


def sweep_panels(spec: dict, rows: list[dict]) -> list[dict]:
    """A sweep figure's panels (one per model and benchmark) from the table's rows: a row
    belongs to the series its label starts with; its x is its `match` value of `figure.x`."""
    figure = spec["figure"]
    x_of = {r["label"]: r.get("match", {}).get(figure["x"]) for r in spec["rows"]}
    panels = []
    for model in spec["models"]:
        mine = [r for r in rows if r["model"] == model]
        for col in spec["columns"]:
            bench = col["benchmark"]
            series = {name: [] for name in figure["series"]}
            reference = None
            for row in mine:
                ours, paper = row["cells"][bench]
                point = (ours.mean if ours else None, ours.ci95 if ours else None, paper)
                if row["label"] == figure.get("reference"):
                    reference = (row["label"], point[0], paper)
                name = next((n for n in figure["series"] if row["label"].startswith(n)), None)
                if name is not None and x_of[row["label"]] is not None:
                    series[name].append((x_of[row["label"]], *point))
            panels.append({"title": f"{model}: {col['label']}", "series": series, "reference": reference})
    return panels


def figure_panels(spec: dict, records: list[dict], model: str | None = None) -> list[tuple[str, Path]]:
    """(label, run dir) of each figure panel: `model` (default: the first), the figure's seed."""
    figure, panels = spec["figure"], []
    for panel in figure["panels"]:
        runs = sorted({r["run"] for r in records if row_matches(r, model or spec["models"][0], panel) and r["seed"] == figure["seed"]})
        if runs:
            panels.append((panel["label"], Path(runs[0])))
    return panels if len(panels) == len(figure["panels"]) else []
