"""What the command-line tools share: the config check Hydra runs at compose time.

`CheckConfig` is a Hydra callback (conf/config.yaml, `hydra.callbacks`): it validates the
composed run config (`aggc.config.validate`), its local training file (`check_data`) and its
hub model (`check_model`) before the job function runs, so before torch and transformers are
imported (they take 10+ s; a bad value fails in about a second). A multirun checks every
combination of its sweep before the first job starts, so `-m clip.beta=0.1,1.5` trains
nothing. A user error prints two lines (key and value, what is allowed, how to fix) and exits
2; `HYDRA_FULL_ERROR=1` raises it with its traceback instead.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .config import ConfigError, require_positive_int, validate

_KEY = re.compile(r"^([A-Za-z_][\w]*(?:\.[\w]+)*)[=:]")


def program() -> str:
    """The command's name as the user typed it (`aggc-train`, or `python -m aggc.train`)."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else "aggc"
    if os.path.basename(path) == "__main__.py":
        return f"python -m aggc.{os.path.basename(os.path.dirname(path))}"
    return os.path.basename(path)


def fix_hint(message: str, cfg: DictConfig | None = None) -> str:
    """How to fix an error whose message starts with its key (`clip.beta=1.5: ...`): where the
    value came from (the config group's file) and how to override it."""
    match = _KEY.match(message)
    if match is None:
        return f"fix: change the value named above; `{program()} --cfg job` prints the composed config"
    key = match.group(1)
    group = key.split(".")[0]
    source = ""
    if cfg is not None:
        choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
        if isinstance(choice, str):
            source = f", or edit conf/{group}/{choice}.yaml"
    return f"fix: pass {key}=<allowed value> on the command line{source} (HYDRA_FULL_ERROR=1 shows the traceback)"


def fail(err: Exception, cfg: DictConfig | None = None, job: list[str] | None = None) -> None:
    """Report a user error in two lines and exit 2, or re-raise under HYDRA_FULL_ERROR=1. An
    exception that is no user error (a defect of a check) is printed with its traceback."""
    from omegaconf.errors import OmegaConfBaseException

    from .data.formats import DataError

    user_error = isinstance(err, (ConfigError, HydraException, OmegaConfBaseException))
    where = f" (sweep job {' '.join(job)})" if job else ""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or not user_error:
        # Hydra turns an exception raised in a callback into a warning and runs the job (every
        # job of a sweep) anyway: the trace is printed here and the command stops
        traceback.print_exception(err)
        sys.stderr.write(f"{program()}: the compose-time check stopped the command{where}\n")
        sys.exit(2)
    if isinstance(err, DataError):
        hint = "fix: correct that record, or point the data config (data.path, GLUE: data.root) at another file"
        sys.stderr.write(f"{program()}: invalid data{where}: {err}\n  {hint}\n")
    else:
        sys.stderr.write(f"{program()}: invalid config{where}: {err}\n  {fix_hint(str(err), cfg)}\n")
    sys.stderr.flush()
    sys.exit(2)


def task_config(cfg: DictConfig) -> DictConfig:
    """The job's config: the composed one without its `hydra` node (as Hydra hands it to the job)."""
    task = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with read_write(task), open_dict(task):
        task.pop("hydra", None)
    return task


def sweep_jobs(cfg: DictConfig) -> list[list[str]]:
    """Every job's overrides of this multirun, expanded as Hydra's basic sweeper expands them
    (the command line's `a=1,2` and `hydra.sweeper.params`)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{k}={v}" for k, v in (OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}).items()]
    arguments += list(OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False))
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_data(cfg: DictConfig, seen: set | None = None) -> None:
    """Read a local SFT / GRPO training file (`data.kind=jsonl`) as the job will: a malformed
    line, a missing field or an empty file fails here with its file, line and field, before
    torch loads. Each distinct file is read once (`seen`) per sweep."""
    if cfg.model.get("task") == "seq_cls" and cfg.data.kind == "tsv":
        return check_glue_data(OmegaConf.to_container(cfg.data, resolve=True), seen)
    if cfg.data.kind == "arith":
        check_arith_templates(cfg.data.get("templates"), "data.templates")
    if cfg.data.kind != "jsonl" or cfg.model.get("task") == "seq_cls":
        return
    spec = OmegaConf.to_container(cfg.data, resolve=True)
    key = (spec["path"], spec["format"], spec.get("limit"))
    if seen is not None and key in seen:
        return
    from .data.formats import load_sft_records

    load_sft_records(spec, "train")
    if seen is not None:
        seen.add(key)


def check_arith_templates(templates, key: str) -> None:
    """Generated arith problems' `templates` (None: all kinds), as the generator will read them."""
    if templates is None:
        return
    from .data.arith import check_templates

    try:
        check_templates(templates)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


def check_glue_data(spec: dict, seen: set | None) -> None:
    """A GLUE task's local TSVs: every file there, the training rows with their fields and labels."""
    from .data import glue
    from .data.formats import DataError

    key = (spec["root"], spec["folder"], spec["train_file"], spec.get("limit"))
    if seen is not None and key in seen:
        return
    glue.check_source(spec)
    path = os.path.join(spec["root"], spec["folder"], spec["train_file"])
    first = 1 if spec.get("columns") else 2   # the file's line of the first row (after its header)
    for i, row in enumerate(glue.read_tsv(Path(path), spec.get("columns"), spec.get("limit"))):
        try:
            glue.to_record(spec, row)
        except KeyError as err:
            raise DataError(f"{path}:{i + first}: no column {err} (data={spec['name']} reads "
                            f"{', '.join(spec['text_fields'])}, {spec['label_field']})") from None
        except ValueError as err:
            raise DataError(f"{path}:{i + first}: field {spec['label_field']!r}: {err}") from None
    if seen is not None:
        seen.add(key)


def check_model(cfg: DictConfig) -> None:
    """A hub checkpoint must be loadable here (offline: in the local cache), `aggc.hub`."""
    if cfg.model.kind == "hub":
        from .hub import check_hub_model

        check_hub_model(cfg.model.hub_id, cfg.model.get("revision"))


def check_eval(cfg: DictConfig) -> None:
    """aggc-eval's `run` (a training run directory with its final model) and its generation
    settings; the GPU of `device=cuda` and the benchmark's files are checked when it starts."""
    from .evaluate import BACKENDS, choose_device, eval_dtype

    for key in ("max_gen_toks", "batch_size"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{key}={value!r}: must be a positive integer")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"backend={cfg.backend!r}: must be one of {', '.join(BACKENDS)}")
    choose_device(cfg.device, cuda_available=True)  # its spelling (auto, cpu, cuda[:N]) here
    eval_dtype(cfg)
    if cfg.eval.get("data") == "arith":  # the held-out problems generated as the evaluation will
        arith = cfg.eval.get("arith")
        if not isinstance(arith, DictConfig):
            raise ConfigError(f"eval.arith={arith!r}: the generated problems' settings, {{eval_size: N, seed: S}} "
                              "(and templates)")
        require_positive_int("eval.arith.eval_size", arith.get("eval_size"))
        check_arith_templates(arith.get("templates"), "eval.arith.templates")
    if OmegaConf.is_missing(cfg, "run"):
        raise ConfigError("run: missing; pass run=<a training run directory> (aggc-train prints it at start)")
    run = str(cfg.run)
    if not os.path.isdir(run):
        raise ConfigError(f"run={run}: no such run directory")
    if not os.path.exists(os.path.join(run, "final", "config.json")):
        raise ConfigError(f"run={run}: no final model ({os.path.join(run, 'final')}); is the training run COMPLETED?")


def check_replay(cfg: DictConfig) -> None:
    """aggc-replay's inputs: `norms` and `out` given, the norms file there, the clip settings valid."""
    from .clipping.config import ClipConfigError
    from .config import ADAGC_NOT_REPLAYABLE, clip_config

    for key, what in (("norms", "a run's metrics.jsonl"), ("out", "the JSONL file to write")):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key}: missing; pass {key}=<{what}>")
    try:
        settings = clip_config(cfg)
    except ClipConfigError as err:
        raise ConfigError(str(err)) from err
    if settings.mode == "adagc":
        raise ConfigError(ADAGC_NOT_REPLAYABLE)
    if not os.path.isfile(str(cfg.norms)):
        raise ConfigError(f"norms={cfg.norms}: no such file")
    if os.path.exists(str(cfg.out)) and os.path.samefile(str(cfg.out), str(cfg.norms)):
        raise ConfigError(f"out={cfg.out}: the norms file itself; replaying into it would overwrite the run's metrics")
    steps = cfg.total_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"total_steps={steps!r}: an integer >= 0 (0: the number of steps in the file)")


def check_workdir(config: DictConfig) -> None:
    """The checks read a config's relative paths (model.hub_id, data.path, run, norms) from the
    directory the command starts in, as its jobs do; `hydra.job.chdir=true` would run each job
    in its output directory (aggc-train: the run directory), where they name other files."""
    if OmegaConf.select(config, "hydra.job.chdir", default=None):
        raise ConfigError(f"hydra.job.chdir=true: {program()} reads the relative paths of its config from the directory "
                          "it starts in (they are checked there before any job runs), not from a job's output directory: "
                          "keep hydra.job.chdir=false")


class ComposeCheck(Callback):
    """Runs `check` on the composed config (every sweep job's, in a multirun) before any job
    starts: a user error fails in two lines, before torch loads. Any other exception stops the
    command too, with its traceback: Hydra would turn it into a warning and start every job
    unchecked."""

    @staticmethod
    def check(cfg: DictConfig, seen: set) -> None:
        """`seen`: what earlier jobs of the same sweep had checked (a shared data file, once)."""
        raise NotImplementedError

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_workdir(config)
            self.check(task_config(config), set())
        except Exception as err:  # noqa: BLE001 - see the class docstring
            fail(err, config)

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        from hydra import compose

        try:
            check_workdir(config)  # a command line's hydra.* overrides are not in the jobs' overrides
        except ConfigError as err:
            fail(err, config)
        seen: set = set()
        for job in sweep_jobs(config):
            composed = config
            try:
                composed = compose(config_name, overrides=job, return_hydra_config=True)
                self.check(task_config(composed), seen)
            except Exception as err:  # noqa: BLE001 - a sweep job that does not compose too
                fail(err, composed, job)


class CheckConfig(ComposeCheck):
    """aggc-train's run config, its local training data and its model (conf/config.yaml)."""

    @staticmethod
    def check(cfg: DictConfig, seen: set) -> None:
        validate(cfg)
        check_data(cfg, seen)
        check_model(cfg)


class CheckEval(ComposeCheck):
    """aggc-eval's run directory and settings (conf/evaluate.yaml)."""

    @staticmethod
    def check(cfg: DictConfig, seen: set) -> None:
        check_eval(cfg)


class CheckReplay(ComposeCheck):
    """aggc-replay's norms file, output and clip settings (conf/replay.yaml)."""

    @staticmethod
    def check(cfg: DictConfig, seen: set) -> None:
        check_replay(cfg)


# What `aggc-ls` lists: each config group of conf/, as the commands name it.
LISTED_GROUPS = {
    "table": "tables and figures (aggc-grid table=<name>, aggc-tables table=<name>)",
    "model": "models (aggc-train model=<name>)",
    "strategy": "strategies (aggc-train strategy=<name>)",
    "clip": "clip presets (aggc-train clip=<name>)",
    "train": "train recipes (aggc-train train=<name>)",
    "data": "training data (aggc-train data=<name>)",
    "eval": "benchmarks (aggc-eval run=<run dir> eval=<name>)",
    "experiment": "pinned cells (aggc-train experiment=<name>)",
}


def describe(path) -> str:
    """A config file's one-line description: the first sentence of its leading comment."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            lines.append(text)
    text, depth, end = " ".join(lines), 0, None
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "." and depth == 0 and text[i + 1:i + 2] in (" ", "") and not text[:i].endswith(("et al", "e.g", "i.e")):
            end = i
            break
    sentence = text[:end].rstrip(":;, ")
    return sentence if len(sentence) <= 110 else sentence[:107].rstrip() + "..."


def ls_main(argv: list[str] | None = None) -> None:
    """`aggc-ls [group ...]`: every option of the config groups, one line each, from conf/."""
    import argparse

    from .paths import CONF_DIR

    parser = argparse.ArgumentParser(prog="aggc-ls", description="List the options of the config groups (conf/<group>/*.yaml), one line each.")
    parser.add_argument("groups", nargs="*", metavar="group", help=f"one or more of: {', '.join(LISTED_GROUPS)} (default: all)")
    groups = parser.parse_args(argv).groups or list(LISTED_GROUPS)
    unknown = [g for g in groups if g not in LISTED_GROUPS]
    if unknown:
        parser.error(f"unknown group {unknown[0]!r}; choose from {', '.join(LISTED_GROUPS)}")
    for group in groups:
        files = sorted((CONF_DIR / group).glob("*.yaml"))
        print(f"{group}: {LISTED_GROUPS[group]}")
        width = max(len(f.stem) for f in files)
        for f in files:
            print(f"  {f.stem:<{width}}  {describe(f)}")
        print()
