"""Synthetic COMPLETED, evaluated runs laid out exactly as the training and evaluation
stages lay them out (config.yaml, manifest.json with its starts, COMPLETED, eval JSONs
carrying the model fingerprint and evaluation id), for planner and table tests that must
not train."""

import json
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from aggc import grid
from aggc.evaluate import eval_settings
from aggc.identity import cell_id, digest
from aggc.overrides import quoted
from aggc.train import rundir


def table_plan(table: str, runs_root: Path, *overrides: str):
    """(grid config, table spec, {cell: run dir}, {benchmark: eval config}) of a table's grid
    as `python -m aggc.grid table=<table> <overrides>` plans it. Call inside Hydra's
    `initialize_config_dir(CONF_DIR)`."""
    cfg = compose("grid", overrides=[f"table={table}", f"runs_root={quoted(runs_root)}", *overrides])
    spec = OmegaConf.to_container(cfg.table, resolve=True)
    if cfg.tiny:
        spec = grid.tiny_version(spec)
    cells = grid.cells(spec)
    return cfg, spec, grid.run_dirs(cfg, spec, cells), grid.eval_configs(cfg, spec, [b for c in cells for b in c.benchmarks])


def train_config(cfg: DictConfig, spec: dict, cell: grid.Cell) -> DictConfig:
    extra = [a for a in grid.extra_args(cfg, spec, "train") if not a.lstrip("+~").startswith("hydra")]
    return compose("config", overrides=[*cell.train_overrides(Path(cfg.runs_root)), *extra])


def completed_run(run: Path, train_cfg: DictConfig, commit: str = "c0ffee", dirty: bool = False, **manifest) -> None:
    """A COMPLETED run of `train_cfg` (once: a run two tables share is written by the first)."""
    if rundir.is_completed(run):
        return
    assert run.name == f"seed{train_cfg.seed}" and run.parent.name.endswith(cell_id(train_cfg))
    run.mkdir(parents=True, exist_ok=True)
    rundir.write_config(run, train_cfg)
    start = {"git_commit": commit, "git_dirty": dirty, "host": "test", "pid": 0, "command": [], "started": "",
             "resumed_from": None, "seconds": 1.0}
    (run / "manifest.json").write_text(json.dumps({"cell_id": cell_id(train_cfg), "seed": train_cfg.seed,
                                                   "starts": [start], "resumed_from": [], **manifest}))
    rundir.mark_completed(run, {"global_step": 1})


def evaluated(run: Path, eval_cfg: DictConfig, score: float | None = None, correct: list[bool] | None = None) -> Path:
    """A result of `run`'s current model under `eval_cfg`, as the evaluation stage writes it:
    its score, or (`correct`) the per-item verdicts of an lm-eval benchmark (its samples, in
    the field of the headline score) and the score they give."""
    path = run / "eval" / f"{eval_cfg.eval.name}.json"
    path.parent.mkdir(exist_ok=True)
    settings = eval_settings(eval_cfg, run)
    record = {"benchmark": eval_cfg.eval.name, "score": score, "model_fingerprint": rundir.model_fingerprint(run),
              "eval_id": digest(settings), "eval_settings": settings}
    if correct is not None:
        assert eval_cfg.eval.kind == "lm_eval" and eval_cfg.eval.score == "reference"
        record["samples"] = [{"doc_id": i, "reference_correct": bool(c)} for i, c in enumerate(correct)]
        record["score"] = 100 * sum(map(bool, correct)) / len(correct)
    path.write_text(json.dumps(record))
    return path
