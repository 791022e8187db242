"""A paper table's whole grid, end to end: train every cell, evaluate, tabulate.

`python -m aggc.grid table=table1` (`make table1`) reads the table's spec
(`conf/table/<table>.yaml`: models x rows x training sets x seeds, and the benchmarks
each training set is evaluated on) and drives the existing stages: locally one training
multirun per table row and training set, one evaluation multirun per benchmark, then the
tables; with `launcher=slurm` it submits them as one dependency chain of array jobs and
returns (`aggc.submit`; `status=true` shows where each cell stands). Cells whose
`COMPLETED` and result files exist are skipped; interrupted ones resume (each cell's run
directory is fixed by its choices). `dry_run=true` prints the plan and writes the pending cells as "cells files" (one line
of overrides per job) for `slurm/array.sbatch`, without running anything. Each stage's
wall time goes to `<out_dir>/<table>.timing.json`, so regressions show.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError
from .identity import cell_id, layout
from .overrides import cells_line, quoted
from .paths import CONF_DIR
from .train.rundir import atomic_write_text, checkpoint_step

LAUNCHER_DIR = CONF_DIR / "hydra" / "launcher"


@dataclass(frozen=True)
class Cell:
    """One training run of the grid and the benchmarks it is evaluated on."""

    model: str
    data: str
    row: int  # index into the table's rows
    strategy: str
    clip: str
    match: tuple[tuple[str, str], ...]  # a sweep row's extra config keys, e.g. (("clip.beta", "0.1"),)
    seed: int
    benchmarks: tuple[str, ...]
    gpus: int = 1  # the row's `resources.gpus`: one process per GPU, FSDP2 over them when several

    def train_overrides(self, runs_root: Path) -> list[str]:
        """The training command's overrides (before the table's `train_args`); the run lands in
        its config's own directory (`aggc.identity`)."""
        return [f"model={self.model}", f"data={self.data}", f"strategy={self.strategy}", f"clip={self.clip}",
                *(f"{k}={v}" for k, v in self.match), *(["train.fsdp=full_shard"] if self.gpus > 1 else []),
                f"seed={self.seed}", f"runs_root={quoted(runs_root)}"]


def cell_ids(cfg: DictConfig, spec: dict, grid: list[Cell]) -> dict[Cell, str]:
    """Each cell's cell id (`aggc.identity`), from the config its training command composes
    (the table's and the command line's overrides included): the same config in two tables
    is the same run, trained once. Composed once per cell, seed aside (the id leaves it out)."""
    from hydra import compose

    extra = [a for a in extra_args(cfg, spec, "train") if not a.lstrip("+~").startswith("hydra")]
    ids: dict[Cell, str] = {}
    for c in grid:
        first = replace(c, seed=0, row=0, benchmarks=())
        if first not in ids:
            ids[first] = cell_id(compose("config", overrides=[*first.train_overrides(Path(cfg.runs_root)), *extra]))
        ids[c] = ids[first]
    return {c: ids[c] for c in grid}


def cost_and_fit(cfg: DictConfig, spec: dict, grid: list[Cell], evals: dict[str, DictConfig]) -> dict:
    """Print what each cell will cost and whether it fits its GPUs (`aggc.cost`: models built
    on the meta device from their published configs); returns each (model, data, row)'s
    `aggc.cost.Estimate`."""
    from hydra import compose

    from . import cost

    extra = [a for a in extra_args(cfg, spec, "train") if not a.lstrip("+~").startswith("hydra")]
    configs = {}
    for c in grid:
        if not any((c.model, c.data, c.row) == (d.model, d.data, d.row) for d in configs):
            configs[c] = compose("config", overrides=[*c.train_overrides(Path(cfg.runs_root)), *extra])
    return cost.report(cfg, spec, grid, configs, evals)


def run_dirs(cfg: DictConfig, spec: dict, grid: list[Cell]) -> dict[Cell, Path]:
    """Each cell's run directory: `aggc.identity.run_dir` of its config."""
    return {c: layout(cfg.runs_root, c.model, c.data, c.strategy, c.clip, i, c.seed) for c, i in cell_ids(cfg, spec, grid).items()}


def table_cells(cfg: DictConfig, spec: dict) -> tuple[set[str], dict[str, dict]]:
    """What a table reads its numbers from (`aggc.tables.write`): its cell ids, and each
    benchmark's evaluation settings as its grid evaluates them (`aggc.evaluate.eval_settings`;
    `chat_template` left to each run)."""
    grid = cells(spec)
    return set(cell_ids(cfg, spec, grid).values()), eval_configs(cfg, spec, [b for c in grid for b in c.benchmarks])


def tiny_version(spec: dict) -> dict:
    """The table's grid shrunk to its `tiny` section: the same rows (or the named subset)
    on the embedded tiny model, for a CPU check of the whole pipeline in minutes."""
    tiny = spec.get("tiny")
    if not tiny:
        raise ConfigError(f"table={spec['name']}: no `tiny` section, so it has no tiny version")
    check_compare(spec)  # a misspelt comparison would be dropped below with the rows the tiny version leaves out
    rows = [r for r in spec["rows"] if r["label"] in tiny["rows"]] if "rows" in tiny else spec["rows"]
    rows = [{k: v for k, v in r.items() if k != "resources"} for r in rows]  # the tiny model: one CPU process per cell
    grid = {**spec["grid"], **{k: tiny[k] for k in ("seeds", "datasets", "train_args", "eval_args") if k in tiny}}
    labels = {r["label"] for r in rows}  # comparisons of the rows it keeps
    compare = [c for c in spec.get("compare", []) if c["row"] in labels and c["reference"] in labels]
    return {**spec, "models": tiny["models"], "rows": rows, "grid": grid, "columns": tiny.get("columns", spec["columns"]),
            "where": tiny.get("where", {}), "compare": compare,
            "title": f"{spec['title']} [tiny version: {', '.join(tiny['models'])}]"}


def check_compare(spec: dict) -> None:
    """Each `compare` entry names two different rows of the table (`row`, `reference`):
    refused when the grid is planned, not when the table is rendered after the training."""
    labels = [r["label"] for r in spec["rows"]]
    for entry in spec.get("compare") or []:
        if not isinstance(entry, dict) or set(entry) != {"row", "reference"}:
            raise ConfigError(f"table={spec['name']}: compare entry {entry!r}: give exactly `row` and `reference`, two row labels")
        for key in ("row", "reference"):
            if entry[key] not in labels:
                raise ConfigError(f"table={spec['name']}: compare {key}={entry[key]!r} names no row; rows: {', '.join(labels)}")
        if entry["row"] == entry["reference"]:
            raise ConfigError(f"table={spec['name']}: compare compares row {entry['row']!r} with itself")


def check_text(spec: dict) -> None:
    """The table's title, model names, row and column labels have a LaTeX spelling
    (`aggc.tables.tex`): refused when the grid is planned, not when the .tex is written
    after the training (the tabulate stage stopped there, before the CSVs and the figure)."""
    from .tables import tex

    texts = [spec.get("title", ""), *spec.get("models", []), *(r["label"] for r in spec["rows"]),
             *(c["label"] for c in spec.get("columns", []))]
    for text in texts:
        try:
            tex(text)
        except ValueError as e:
            raise ConfigError(f"table={spec['name']}: {e}") from None


def cells(spec: dict) -> list[Cell]:
    grid = spec.get("grid")
    if not grid:
        raise ConfigError(f"table={spec['name']}: no `grid` section, so it has no training plan")
    check_compare(spec)
    check_text(spec)
    return [
        Cell(model, data, i, row["strategy"], row["clip"], tuple((k, str(v)) for k, v in row.get("match", {}).items()),
             seed, tuple(benchmarks), gpus(spec, row))
        for model in spec["models"]
        for data, benchmarks in grid["datasets"].items()
        for i, row in enumerate(spec["rows"]) if not row.get("paper_only")  # e.g. Table 2's HAdapter: the paper's number only
        for seed in row.get("seeds", grid["seeds"])  # e.g. the untrained base: one seed is all there is
    ]


def gpus(spec: dict, row: dict) -> int:
    """A row's GPUs per cell (`resources: {gpus: N}`, default 1; Table 1's Full FT: 4, as in
    the paper): under Slurm one task per GPU; several train with FSDP2 (`train.fsdp=full_shard`)."""
    resources = row.get("resources") or {}
    unknown = set(resources) - {"gpus"}
    n = resources.get("gpus", 1)
    if unknown or not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"table={spec['name']}, row {row['label']!r}: resources={resources}: only `gpus`, a positive integer")
    return n


def dataset_waves(cfg: DictConfig, spec: dict) -> dict[str, tuple[int, str | None]]:
    """Each training set's wave and the training set it starts from. A task whose config
    names `data.init_from` (Table 2: STS-B, RTE, MRPC start from the MNLI run) trains in
    the wave after that task's; the rest in wave 1. Read from the training configs as the
    training stage composes them (the table's and the command line's overrides included)."""
    from hydra import compose

    overrides = [a for a in extra_args(cfg, spec, "train") if not a.lstrip("+~").startswith("hydra")]
    model = f"model={spec['models'][0]}"  # the table's overrides may name model keys
    source = {d: compose("config", overrides=[model, f"data={d}", *overrides]).data.get("init_from") for d in spec["grid"]["datasets"]}

    def wave(data: str, seen: tuple[str, ...] = ()) -> int:
        if data in seen:
            raise ConfigError(f"table={spec['name']}: data.init_from goes round in a circle: {' -> '.join(seen + (data,))}")
        if not source[data]:
            return 1
        if source[data] not in source:
            raise ConfigError(f"table={spec['name']}: data={data} starts from data.init_from={source[data]}, which the "
                              f"table does not train (add it to grid.datasets, or set data.init_from=null)")
        return wave(source[data], seen + (data,)) + 1

    return {d: (wave(d), source[d]) for d in source}


def training_status(run: Path) -> str:
    if (run / "COMPLETED").exists():
        return "done"
    steps = [checkpoint_step(p) for p in (run / "checkpoints").glob("checkpoint-*")] if run.is_dir() else []
    return f"resumes at step {max(steps)}" if steps else "to run"


def eval_configs(cfg: DictConfig, spec: dict, benchmarks) -> dict[str, DictConfig]:
    """Each benchmark's evaluation config as the grid's evaluation commands compose it."""
    from hydra import compose

    extra = [a for a in extra_args(cfg, spec, "eval") if not a.lstrip("+~").startswith("hydra")]
    return {b: compose("evaluate", overrides=[f"eval={b}", "run=.", *extra]) for b in sorted(set(benchmarks))}


def pending_evaluations(cell: Cell, run: Path, evals: dict[str, DictConfig]) -> list[str]:
    """The cell's benchmarks without a result of the run's current model under the table's
    evaluation settings (a quick `eval.limit=5` check, or a result of a retrained model, is
    not one)."""
    from .evaluate import eval_settings, is_fresh

    return [b for b in cell.benchmarks if not is_fresh(run / "eval" / f"{b}.json", run, eval_settings(evals[b], run))]


def extra_args(cfg: DictConfig, spec: dict, stage: str) -> list[str]:
    """The table's own overrides for a stage (`train_args` / `eval_args`), then the command line's."""
    return [*spec["grid"].get(f"{stage}_args", []), *shlex.split(cfg[f"{stage}_args"])]


def check_launcher(launcher: str) -> None:
    names = ["local", *sorted(p.stem for p in LAUNCHER_DIR.glob("*.yaml"))]
    if launcher not in names:
        raise ConfigError(f"launcher={launcher!r}: must be one of {', '.join(names)}")


def _sweep(values) -> str:
    return ",".join(str(v) for v in sorted(set(values), key=str))


def training_commands(cfg: DictConfig, spec: dict, todo: list[Cell], waves: dict[str, tuple[int, str | None]]
                      ) -> list[list[list[str]]]:
    """Per wave (`dataset_waves`), one multirun per table row and training set over the
    models x seeds that have work left (cells already COMPLETED inside that product return
    at once). Not one over several training sets: Hydra composes a multirun's primary
    config with the non-swept overrides only, i.e. with the default data config, where a
    `data.*` override of the table (GLUE's `data.limit`) does not exist."""
    by_wave = []
    for wave in sorted({w for w, _ in waves.values()}):
        commands = []
        for i, row in enumerate(spec["rows"]):
            for data in sorted({c.data for c in todo if c.row == i and waves[c.data][0] == wave}):
                commands.append(row_command(cfg, spec, row, data, [c for c in todo if c.row == i and c.data == data]))
        if commands:
            by_wave.append(commands)
    return by_wave


def row_command(cfg: DictConfig, spec: dict, row: dict, data: str, cells_left: list[Cell]) -> list[str]:
    """The training multirun of one table row on one training set, over its cells' models and seeds."""
    return [
        sys.executable, "-m", "aggc.train", "-m",
        f"model={_sweep(c.model for c in cells_left)}", f"data={data}",
        f"strategy={row['strategy']}", f"clip={row['clip']}", *(f"{k}={v}" for k, v in row.get("match", {}).items()),
        f"seed={_sweep(c.seed for c in cells_left)}", f"runs_root={quoted(Path(cfg.runs_root))}",
        *extra_args(cfg, spec, "train"),
    ]


def evaluation_commands(cfg: DictConfig, spec: dict, pending: dict[str, list[Path]]) -> list[list[str]]:
    """One evaluation multirun per benchmark over the runs still missing its result."""
    return [
        [sys.executable, "-m", "aggc.evaluate", "-m", f"eval={bench}", "run=" + ",".join(quoted(r) for r in runs),
         f"hydra.sweep.dir={quoted(Path(cfg.runs_root) / 'eval-jobs' / bench)}",
         *extra_args(cfg, spec, "eval")]
        for bench, runs in pending.items() if runs
    ]


def plan(cfg: DictConfig, spec: dict) -> tuple[list[list[list[str]]], list[list[str]]]:
    """Print every cell with its state; write the cells files; return the training commands
    (wave by wave) and the evaluation commands."""
    runs_root = Path(cfg.runs_root)
    waves = dataset_waves(cfg, spec)
    grid = sorted(cells(spec), key=lambda c: waves[c.data][0])  # stable: the table's order within a wave
    dirs = run_dirs(cfg, spec, grid)
    evals = eval_configs(cfg, spec, [b for c in grid for b in c.benchmarks])
    todo = [c for c in grid if training_status(dirs[c]) != "done"]
    pending: dict[str, list[Path]] = {}
    lines = []
    label_width = max(len(row["label"]) for row in spec["rows"])
    for c in grid:
        run = dirs[c]
        evals_left = pending_evaluations(c, run, evals)
        for bench in evals_left:
            pending.setdefault(bench, []).append(run)
        state = training_status(run)
        if state != "done" and waves[c.data][1]:
            state += f" (after {waves[c.data][1]})"
        lines.append(f"  {c.model:<22} {c.data:<14} {spec['rows'][c.row]['label']:<{label_width}} seed {c.seed}  "
                     f"train: {state:<18} eval: {', '.join(f'{b} ' + ('to run' if b in evals_left else 'done') for b in c.benchmarks)}")
    n_evals = sum(len(c.benchmarks) for c in grid)
    paper_only = sum(bool(row.get("paper_only")) for row in spec["rows"])
    rows = f"{len(spec['rows']) - paper_only} rows" + (f" (+{paper_only} paper only)" if paper_only else "")
    print(f"{spec['name']}: {len(spec['models'])} models x {rows} x {len(spec['grid']['datasets'])} "
          f"training sets x {len(spec['grid']['seeds'])} seeds = {len(grid)} training cells, {n_evals} evaluations")
    print("\n".join(lines))
    if len({w for w, _ in waves.values()}) > 1:
        for n in sorted({w for w, _ in waves.values()}):
            print(f"training wave {n}: " + ", ".join(d + (f" (from {src})" if src else "") for d, (w, src) in waves.items() if w == n))
    print(f"to do: {len(todo)} of {len(grid)} training cells, {sum(map(len, pending.values()))} of {n_evals} evaluations "
          f"(launcher: {cfg.launcher})")
    if cfg.dry_run or cfg.launcher != "local":  # before any GPU time: what it costs, and what cannot fit
        estimates = cost_and_fit(cfg, spec, grid, evals)
        unfit = [c for c in todo if not estimates[(c.model, c.data, c.row)].fits]
        if unfit:
            todo = [c for c in todo if c not in unfit]
            pending = {b: [r for r in runs if r not in {dirs[c] for c in unfit}] for b, runs in pending.items()}
            print(f"not submitted: {len(unfit)} training cells that do not fit {cfg.gpu.memory_gb} GB per GPU, and their "
                  "evaluations")

    plan_dir = runs_root / "plan"
    plan_dir.mkdir(parents=True, exist_ok=True)
    extra_train, extra_eval = extra_args(cfg, spec, "train"), extra_args(cfg, spec, "eval")
    train_file, eval_file = plan_dir / f"{spec['name']}.train.txt", plan_dir / f"{spec['name']}.eval.txt"
    def cells_text(cells: list[Cell]) -> str:  # one line of training overrides per cell
        return "".join(cells_line(c.train_overrides(runs_root) + extra_train) for c in cells)

    atomic_write_text(train_file, cells_text(todo))
    atomic_write_text(eval_file, "".join(cells_line([f"run={quoted(r)}", f"eval={b}", *extra_eval])
                                         for b, runs in pending.items() for r in runs))
    print(f"cells files (for slurm/array.sbatch): {train_file} ({len(todo)} lines), {eval_file} "
          f"({sum(map(len, pending.values()))} lines)")
    if len({waves[c.data][0] for c in todo}) > 1:  # the train file is in wave order; one file per wave to submit in turn
        for n in sorted({waves[c.data][0] for c in todo}):
            mine = [c for c in todo if waves[c.data][0] == n]
            wave_file = plan_dir / f"{spec['name']}.train.wave{n}.txt"
            atomic_write_text(wave_file, cells_text(mine))
            print(f"  wave {n}: {wave_file} ({len(mine)} lines)" + (" (submit after the previous wave has finished: "
                  "sbatch --dependency=afterok:<its job id>)" if n > 1 else ""))
    return training_commands(cfg, spec, todo, waves), evaluation_commands(cfg, spec, pending)


def run_all(commands: list[list[str]]) -> None:
    """One after the other (they share the machine's GPU)."""
    failed = [c for c in commands if subprocess.run(c).returncode != 0]
    if failed:
        raise SystemExit("failed: " + "; ".join(shlex.join(c[2:]) for c in failed))


@hydra.main(config_path=str(CONF_DIR), config_name="grid", version_base="1.3")
def main(cfg: DictConfig) -> None:
    check_launcher(cfg.launcher)
    spec = OmegaConf.to_container(cfg.table, resolve=True)
    if cfg.tiny:
        spec = tiny_version(spec)
    if cfg.status:
        from .submit import status

        return status(cfg, spec)
    train, evaluate = plan(cfg, spec)  # train: wave by wave (a task that starts from another's run comes after it)
    if cfg.launcher != "local":  # a dependency chain of array jobs; the driver returns once they are queued
        from .submit import submit

        hydra_cfg = HydraConfig.get()
        return submit(cfg, spec, hydra_cfg.runtime.choices.table,
                      [o for o in hydra_cfg.overrides.task if o.lstrip("+~").startswith("table.")], cfg.dry_run)
    several = sorted({spec["rows"][c.row]["label"] for c in cells(spec) if c.gpus > 1})
    if several and not cfg.dry_run:
        raise ConfigError(f"rows {', '.join(several)} ask for several GPUs per cell (resources.gpus): launcher=local runs "
                          f"one process per cell; use launcher=slurm (one task per GPU)")
    for command in [c for wave in train for c in wave] + evaluate:
        shown = [f"run=<{a.count(',') + 1} runs>" if a.startswith("run=") else a for a in command[1:]]
        print(("would run: " if cfg.dry_run else "running: ") + shlex.join(shown))
    if cfg.dry_run:
        return
    from .tables import write

    seconds = {}
    for stage, work in (("train", lambda: [run_all(wave) for wave in train]), ("evaluate", lambda: run_all(evaluate)),
                        ("tables", lambda: write(spec, Path(cfg.runs_root), Path(cfg.paper_dir), Path(cfg.out_dir),
                                                 *table_cells(cfg, spec)))):
        started = time.time()
        paths = work()
        seconds[stage] = round(time.time() - started, 1)
    timing = Path(cfg.out_dir) / f"{spec['name']}.timing.json"
    atomic_write_text(timing, json.dumps({"seconds": seconds, "cells": len(cells(spec)), "launcher": cfg.launcher}, indent=1) + "\n")
    from .provenance import stamp  # where each file comes from: commit, command, stack (README, Determinism and provenance)

    provenance = stamp(Path(cfg.out_dir), [*paths.values(), timing], " ".join(["python", "-m", "aggc.grid", *sys.argv[1:]]))
    print(Path(paths["md"]).read_text())
    print("written:", ", ".join(str(p) for p in [*paths.values(), timing, provenance]))
    print("wall time per stage (s):", seconds)


if __name__ == "__main__":
    main()
