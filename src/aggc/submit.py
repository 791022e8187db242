"""`make <table> LAUNCHER=slurm`: a table's grid submitted to Slurm as one dependency chain;
the driver returns as soon as everything is queued.

- Training: per training wave (`grid.dataset_waves`) and resource shape (a row's
  `resources.gpus`), one array job of slurm/array.sbatch, a task per cell still to train
  (one task per GPU: `--ntasks-per-node`). A later wave's arrays wait for the earlier
  wave's (`afterok`: every task succeeded), and for an earlier submission's training tasks
  of earlier waves that are still queued or running.
- Evaluation: beside each training array, one of the same length whose task i evaluates
  cell i's benchmarks once training task i has succeeded (`aftercorr`: per cell, not per
  array). Cells trained earlier but not evaluated: one array with no dependency.
- The table: one job, `python -m aggc.tables`, once every array has ended (`afterany`: a
  failed cell is a dash in the table, not a missing table).

Concurrency: the launcher's `array_parallelism` caps the grid's running tasks in total;
each array gets a share (`--array=0-N%share`, proportional to its length, at least 1) and
the shares add up to at most the cap. Each submission's job ids are added to
`<runs_root>/plan/<table>.jobs.json`; `status=true` (`make <table> STATUS=1`) shows each
cell's state from its run directory and the scheduler (squeue; sacct where accounting
runs). A cell whose task of an earlier submission is still queued or running is not
submitted again.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from .config import ConfigError
from .overrides import cells_line, quoted
from .paths import ROOT
from .train.rundir import atomic_write_text

TEMPLATE = ROOT / "slurm" / "array.sbatch"


@dataclass
class Array:
    """One array job to submit: a cells file for slurm/array.sbatch and what it waits for."""

    key: str  # e.g. "train-w1-g4", "eval-w1-g4", "eval"
    module: str  # aggc.train | aggc.evaluate
    lines: list[str]  # cells-file lines
    runs: list[Path]  # the run directory of each line
    tasks: int  # tasks (= GPUs) per array task
    after: tuple[str, str] | None = None  # (dependency type, the keys of the arrays it waits for, comma-separated)
    after_tasks: tuple[str, ...] = ()  # tasks of an earlier submission it also waits for (afterok), e.g. "12_3"


def launcher_settings(launcher: str, args: list[str]) -> DictConfig:
    """The launcher config (conf/hydra/launcher/<launcher>.yaml) with the command line's and
    the table's `hydra.launcher.*` overrides."""
    from hydra import compose

    mine = [a for a in args if a.lstrip("+~").startswith("hydra.launcher.")]
    return compose("config", overrides=[f"hydra/launcher={launcher}", *mine], return_hydra_config=True).hydra.launcher


def sbatch_options(settings: DictConfig, tasks: int = 1) -> list[str]:
    """sbatch options of one array task from the launcher's keys (per task: GPUs, memory;
    `tasks` tasks on one node)."""
    options = [f"--job-name={settings.name}", "--nodes=1", f"--ntasks-per-node={tasks}", f"--cpus-per-task={settings.cpus_per_task}",
               f"--gpus-per-node={settings.gpus_per_node * tasks}", f"--time={settings.timeout_min}"]
    if settings.mem_gb:
        options.append(f"--mem={settings.mem_gb * tasks}G")
    options += [f"--{key}={settings[key]}" for key in ("partition", "account", "qos", "constraint", "exclude") if settings.get(key)]
    for key, value in (settings.additional_parameters or {}).items():  # as submitit writes them: true is a flag, false none
        if value is not False and value is not None:
            options.append(f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
    return options


def shares(sizes: list[int], cap: int) -> list[int]:
    """Each array's `%N`: proportional to its length, at least 1, at most its length, adding
    up to at most `cap` (the grid's total)."""
    if len(sizes) > cap:
        raise ConfigError(f"array_parallelism={cap}: the grid submits {len(sizes)} arrays, each needs at least one "
                          f"running task; raise hydra.launcher.array_parallelism to {len(sizes)} or more")
    out = [min(size, max(1, cap * size // sum(sizes))) for size in sizes]
    while sum(out) > cap:  # the minimum of 1 can overshoot: take from the largest share
        out[out.index(max(out))] -= 1
    return out


def arrays(cfg: DictConfig, spec: dict, busy: frozenset[Path] = frozenset(), training: dict[Path, str] | None = None) -> list[Array]:
    """The grid's arrays in submission order (an array after those it depends on), without
    the cells whose run directories are `busy` (an earlier submission's task is still active).
    `training`: busy run directories -> their earlier submission's training task still queued
    or running; a later wave's training also waits for those of earlier waves (it starts
    from their runs)."""
    from . import grid

    waves = grid.dataset_waves(cfg, spec)
    cells = grid.cells(spec)
    dirs = grid.run_dirs(cfg, spec, cells)
    evals = grid.eval_configs(cfg, spec, [b for c in cells for b in c.benchmarks])
    train_args = [a for a in grid.extra_args(cfg, spec, "train") if not a.lstrip("+~").startswith("hydra.launcher.")]
    eval_args = [a for a in grid.extra_args(cfg, spec, "eval") if not a.lstrip("+~").startswith("hydra.launcher.")]
    sweeps = Path(cfg.runs_root) / "eval-jobs"

    def eval_line(c) -> str:
        left = grid.pending_evaluations(c, dirs[c], evals)
        return cells_line(["-m", f"run={quoted(dirs[c])}", f"eval={','.join(left)}", f"hydra.sweep.dir={quoted(sweeps)}", *eval_args])

    out: list[Array] = []
    previous: list[str] = []
    todo = [c for c in cells if grid.training_status(dirs[c]) != "done" and dirs[c] not in busy]
    for wave in sorted({waves[c.data][0] for c in todo}):
        keys = []
        earlier = tuple(task for c in cells if waves[c.data][0] < wave and (task := (training or {}).get(dirs[c])))
        for gpus in sorted({c.gpus for c in todo if waves[c.data][0] == wave}):
            mine = [c for c in todo if waves[c.data][0] == wave and c.gpus == gpus]
            key = f"train-w{wave}-g{gpus}"
            after = ("afterok", ",".join(previous)) if previous else None
            out.append(Array(key, "aggc.train", [cells_line(c.train_overrides(Path(cfg.runs_root)) + train_args) for c in mine],
                             [dirs[c] for c in mine], gpus, after, earlier))
            out.append(Array(f"eval-w{wave}-g{gpus}", "aggc.evaluate", [eval_line(c) for c in mine], [dirs[c] for c in mine], 1,
                             ("aftercorr", key)))
            keys.append(key)
        previous = keys
    trained = [c for c in cells if c not in todo and dirs[c] not in busy and grid.pending_evaluations(c, dirs[c], evals)]
    if trained:
        out.append(Array("eval", "aggc.evaluate", [eval_line(c) for c in trained], [dirs[c] for c in trained], 1))
    return out


def submit(cfg: DictConfig, spec: dict, table: str, table_overrides: list[str], dry_run: bool) -> None:
    """Write each array's cells file, submit the arrays and the table's job in dependency
    order (or print the sbatch commands: `dry_run`), record the job ids, and return.
    `table`, `table_overrides`: the grid's `table=` choice and `table.*` overrides, which the
    table's job is given too."""
    from . import grid

    if any(a.startswith("hydra/launcher") for a in grid.extra_args(cfg, spec, "train") + grid.extra_args(cfg, spec, "eval")):
        raise ConfigError("hydra/launcher=... in train_args/eval_args: choose the launcher with launcher=<name> (LAUNCHER=)")
    if not dry_run and not shutil.which("sbatch"):
        raise ConfigError(f"launcher={cfg.launcher}: no `sbatch` here; submit from a machine with Slurm's commands "
                          "(a login node), or use launcher=local")
    plan_dir = Path(cfg.runs_root) / "plan"
    logs = plan_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    train = launcher_settings(cfg.launcher, grid.extra_args(cfg, spec, "train"))
    evaluate = launcher_settings(cfg.launcher, grid.extra_args(cfg, spec, "eval"))
    for settings in (train, evaluate):  # here the launcher's keys are per task; a cell's GPUs come from its row
        if settings.tasks_per_node != 1 or settings.gpus_per_node > 1:
            raise ConfigError(f"hydra.launcher.tasks_per_node={settings.tasks_per_node}, gpus_per_node={settings.gpus_per_node}: "
                              f"launcher={cfg.launcher} gives each row's cells the GPUs of its `resources.gpus` (one task "
                              "per GPU); the launcher's keys are per task here (gpus_per_node 0 or 1, tasks_per_node 1)")
    jobs_file = plan_dir / f"{spec['name']}.jobs.json"
    earlier = submitted(jobs_file)
    active = {key: task for key, (task, state) in cell_tasks(earlier).items() if state not in ENDED}
    busy = frozenset(run for run, _ in active)
    work = arrays(cfg, spec, busy, {run: task for (run, kind), task in active.items() if kind == "train"})
    if busy:
        print(f"{len(busy)} cells have a task of an earlier submission still queued or running: not submitted again")
    if busy and not work:
        print("nothing new to submit (the earlier submission's table job renders the table)")
        return
    caps = shares([len(a.lines) for a in work], train.array_parallelism) if work else []
    env = {**os.environ, "PYTHON": shlex.quote(sys.executable)}  # the jobs run this interpreter (array.sbatch splits PYTHON as shell words)
    ids: dict[str, str] = {}
    recorded = list(earlier)

    def sbatch(key: str, options: list[str], *rest: str, runs: list[Path] | None = None) -> str:
        """Submit one job and record it in the jobs file at once: a later sbatch that fails
        (a QOS limit, a bad option) leaves the jobs already queued known to the next
        submission's busy check, which would otherwise queue their cells twice."""
        command = ["sbatch", "--parsable", *options, *rest]
        print(f"{'would submit' if dry_run else 'submitting'} {key}: {shlex.join(command)}")
        if dry_run:
            return f"<{key}>"
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}\n(submitted so far, recorded in {jobs_file}: "
                             f"{ids}; the next submission does not queue their cells again)")
        job = proc.stdout.strip().split(";")[0]
        recorded.append({"key": key, "job": job, **({"runs": [str(r) for r in runs]} if runs is not None else {})})
        atomic_write_text(jobs_file, json.dumps(recorded, indent=1) + "\n")
        return job

    for array, cap in zip(work, caps):
        cells_file = plan_dir / f"{spec['name']}.{array.key}.txt"
        atomic_write_text(cells_file, "".join(array.lines))
        options = [f"--array=0-{len(array.lines) - 1}%{cap}", *sbatch_options(train if array.module == "aggc.train" else evaluate, array.tasks),
                   f"--output={logs}/%x-%A_%a.out"]
        after = [f"{array.after[0]}:" + ":".join(ids[k] for k in array.after[1].split(","))] if array.after else []
        after += [f"afterok:{':'.join(array.after_tasks)}"] if array.after_tasks else []
        if after:  # a dependency that can no longer be met (a failed cell) cancels the task, not leaves it pending
            options += [f"--dependency={','.join(after)}", "--kill-on-invalid-dep=yes"]
        ids[array.key] = sbatch(array.key, options, str(TEMPLATE), array.module, str(cells_file), runs=array.runs)

    tabulate = [sys.executable, "-m", "aggc.tables", f"table={table}", *table_overrides,
                f"tiny={str(bool(cfg.tiny)).lower()}", f"runs_root={quoted(cfg.runs_root)}", f"out_dir={quoted(cfg.out_dir)}",
                f"paper_dir={quoted(cfg.paper_dir)}", f"train_args={quoted(cfg.train_args)}", f"eval_args={quoted(cfg.eval_args)}"]
    options = [f"--job-name={train.name}-{spec['name']}-table", "--ntasks=1", "--cpus-per-task=1", "--mem=4G", "--time=60",
               f"--output={logs}/%x-%j.out", *[f"--{k}={train[k]}" for k in ("partition", "account", "qos") if train.get(k)]]
    if ids:
        options.append("--dependency=afterany:" + ":".join(ids.values()))
    ids["table"] = sbatch("table", options, f"--chdir={os.getcwd()}", f"--wrap={shlex.join(tabulate)}")
    if dry_run:
        return
    print(f"submitted {len(work)} arrays and the table's job (ids in {jobs_file}); the table appears in {cfg.out_dir} when "
          f"they end. State: make {spec['name']} STATUS=1 (same arguments)")


ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
         "unknown"}


def submitted(jobs_file: Path) -> list[dict]:
    """Every submission's arrays, oldest first: {"key", "job", "runs": [run dir of each index]}."""
    return json.loads(jobs_file.read_text()) if jobs_file.exists() else []


def cell_tasks(entries: list[dict]) -> dict[tuple[Path, str], tuple[str, str]]:
    """(run dir, "train" | "eval") -> (its latest task, e.g. "12_3", and the scheduler's state
    of it: "unknown" once squeue has forgotten it and there is no sacct)."""
    states = scheduler_states(sorted({e["job"] for e in entries}))
    out = {}
    for entry in entries:
        for i, run in enumerate(entry.get("runs", [])):
            task = f"{entry['job']}_{i}"
            out[(Path(run), entry["key"].split("-")[0])] = (task, states.get(task) or states.get(entry["job"]) or "unknown")
    return out


def scheduler_states(jobs: list[str]) -> dict[str, str]:
    """State of each task the scheduler knows ("12_3": "RUNNING"): sacct where accounting
    runs (every job, however old), else squeue (jobs ended within MinJobAge)."""
    states: dict[str, str] = {}
    if not jobs or not shutil.which("squeue"):
        return states
    proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(jobs)], capture_output=True, text=True)
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:  # (one job id, forgotten since: rc 1, nothing to say)
        raise SystemExit(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}\nthe earlier submission's jobs are in an unknown "
                         "state: nothing submitted (a task still queued or running would be queued twice); try again")
    states.update(line.split("|", 1) for line in proc.stdout.split() if "|" in line)
    if not shutil.which("sacct"):
        return states
    proc = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(jobs)], capture_output=True, text=True)
    if proc.returncode == 0:
        states.update((job, state.split()[0]) for job, state in (line.split("|", 1) for line in proc.stdout.split("\n") if "|" in line))
    return states


def status(cfg: DictConfig, spec: dict) -> None:
    """Each cell's state: training and evaluation from its run directory, and its tasks in
    the scheduler (from the last submission's `<table>.jobs.json`)."""
    from . import grid

    cells = grid.cells(spec)
    dirs = grid.run_dirs(cfg, spec, cells)
    evals = grid.eval_configs(cfg, spec, [b for c in cells for b in c.benchmarks])
    jobs_file = Path(cfg.runs_root) / "plan" / f"{spec['name']}.jobs.json"
    entries = submitted(jobs_file)
    tasks: dict[Path, list[str]] = {}  # run dir -> "train 12_3 RUNNING", ...
    for (run, kind), (task, state) in cell_tasks(entries).items():
        tasks.setdefault(run, []).append(f"{kind} {task} {state}")
    label_width = max(len(row["label"]) for row in spec["rows"])
    for c in cells:
        run = dirs[c]
        left = grid.pending_evaluations(c, run, evals)
        print(f"  {c.model:<22} {c.data:<14} {spec['rows'][c.row]['label']:<{label_width}} seed {c.seed}  "
              f"train: {grid.training_status(run):<18} eval: {', '.join(f'{b} ' + ('to run' if b in left else 'done') for b in c.benchmarks)}"
              + (f"  slurm: {'; '.join(tasks[run])}" if run in tasks else ""))
    tables = [e["job"] for e in entries if e["key"] == "table"]
    if tables:
        print(f"table job {tables[-1]}: {scheduler_states(tables[-1:]).get(tables[-1], 'unknown (ended, and no sacct)')}")
    else:
        print(f"no submission recorded ({jobs_file})")
