"""The training command checks its config at compose time (aggc.cli.CheckConfig): a bad value
fails before torch loads, in two lines without a traceback, and a sweep with one bad value
trains nothing."""

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from aggc.cli import sweep_jobs
from aggc.paths import ROOT

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)


def train(*args, env=ENV, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "aggc.train", *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.parametrize("bad, allowed", [("clip.beta=1.5", "[0, 1)"), ("seed=-1", "[0, 2**32)"),
                                          ("train.warmup_ratio=2", "[0, 1)"), ("strategy.peft.r=0", "positive integer")])
def test_bad_value_fails_in_two_lines_without_traceback_and_writes_nothing(tmp_path, bad, allowed):
    """Key, value, what is allowed and how to fix; exit 2; no run directory."""
    proc = train(bad, f"runs_root={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert bad in lines[0] and allowed in lines[0]
    assert lines[1].strip().startswith(f"fix: pass {bad.split('=')[0]}=")
    assert not any(tmp_path.iterdir())


def test_bad_value_fails_before_torch_is_imported(tmp_path):
    """The check runs before the job function, so before torch/transformers load (the 10 s it saves)."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['aggc-train', 'clip.beta=1.5', 'runs_root={tmp_path}']\n"
            "try:\n    runpy.run_module('aggc.train', run_name='__main__')\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stdout + proc.stderr


@pytest.mark.parametrize("sweep", [False, True])
def test_full_error_shows_the_traceback_and_still_stops_at_compose_time(tmp_path, sweep):
    """Hydra turns a callback's exception into a warning and runs the jobs anyway: under
    HYDRA_FULL_ERROR=1 the check printed its trace that way and the sweep's good job trained."""
    args = ["-m", "clip.beta=0.1,1.5", "train.max_steps=1"] if sweep else ["clip.beta=1.5"]
    proc = train(*args, f"runs_root={tmp_path}", env={**ENV, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "clip.beta=1.5" in proc.stderr, proc.stderr[-2000:]
    assert "raised ConfigError" not in proc.stderr and not any(tmp_path.rglob("metrics.jsonl"))


def test_a_sweep_job_that_does_not_compose_fails_in_two_lines(tmp_path):
    proc = train("-m", "strategy=aggc,lorra", f"runs_root={tmp_path}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Could not find 'strategy/lorra'" in proc.stderr and "UserWarning" not in proc.stderr, proc.stderr
    assert not any(tmp_path.rglob("metrics.jsonl"))


def test_sweep_with_one_bad_value_trains_nothing(tmp_path):
    """Every combination is checked before the first job: the good one (listed first) does not run."""
    proc = train("-m", "clip.beta=0.1,1.5", "seed=0,1", f"runs_root={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert "clip.beta=1.5" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.rglob("checkpoints")) and not any(tmp_path.rglob("COMPLETED"))
    assert not any(tmp_path.iterdir())


def test_sweep_jobs_expand_as_the_basic_sweeper():
    """The check covers every job Hydra's sweeper would launch: the product of the command
    line's sweeps and hydra.sweeper.params."""
    cfg = OmegaConf.create({"hydra": {"overrides": {"task": ["clip.beta=0.1,0.2", "seed=range(3)", "model=tiny_llama"]},
                                      "sweeper": {"params": {"train.max_steps": "2,3"}}}})
    jobs = sweep_jobs(cfg)
    assert len(jobs) == 12 and len({tuple(j) for j in jobs}) == 12
    assert all("model=tiny_llama" in j for j in jobs)
    assert {j for job in jobs for j in job if j.startswith("seed=")} == {"seed=0", "seed=1", "seed=2"}
    assert {j for job in jobs for j in job if j.startswith("train.")} == {"train.max_steps=2", "train.max_steps=3"}


def test_bad_training_data_fails_before_torch_with_file_line_and_field(tmp_path):
    """A local training file is read at compose time: a GSM8K row without '####' names its file and line."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?", "answer": "four"}\n')
    proc = train("data=gsm8k", f"data.path={data}", f"runs_root={tmp_path / 'runs'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{data}:2: field 'answer'" in proc.stderr
    assert not (tmp_path / "runs").exists()


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"


@pytest.mark.parametrize("train_file, says", [
    (None, "no such file"),
    (RTE_HEADER + "1\tonly one field\n", "train_first2000.tsv:3: 2 fields, the header has 4"),
    (RTE_HEADER + "1\ta\tb\tmaybe\n", "train_first2000.tsv:3: field 'label'"),
    (RTE_HEADER.replace("sentence1", "sent1"), "train_first2000.tsv:2: no column 'sentence1'"),
])
def test_bad_glue_tsv_fails_at_compose_time_with_file_and_line(tmp_path, train_file, says):
    """GLUE's local TSVs are read at compose time too: a missing file failed in a
    FileNotFoundError traceback after torch loaded, a bad row or label when training began."""
    folder = tmp_path / "glue" / "RTE"
    folder.mkdir(parents=True)
    (folder / "dev.tsv").write_text(RTE_HEADER)
    if train_file is not None:
        (folder / "train_first2000.tsv").write_text(train_file)
    proc = train("model=tiny_deberta", "data=glue_rte_local", f"data.root={tmp_path / 'glue'}", "data.init_from=null",
                 "strategy=lora", f"runs_root={tmp_path / 'runs'}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert says in lines[0] and not (tmp_path / "runs").exists()


HYDRA_COMMANDS = {"aggc-train": "train", "aggc-eval": "evaluate", "aggc-grid": "grid", "aggc-tables": "tables", "aggc-replay": "replay"}


def console_scripts() -> dict[str, str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def command(name: str) -> str:
    """The installed console script (make setup installs them into the venv beside python)."""
    from pathlib import Path

    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed: run make setup (pip install -e .)"
    return str(path)


def test_every_console_script_names_a_callable():
    import importlib

    scripts = console_scripts()
    assert set(HYDRA_COMMANDS) | {"aggc-bench", "aggc-ls"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


@pytest.mark.parametrize("name", sorted(HYDRA_COMMANDS))
def test_help_names_the_program_and_its_groups(name):
    proc = subprocess.run([command(name), "--help"], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{name}: ") and "powered by Hydra" not in proc.stdout
    assert "== Config groups (group=option) ==" in proc.stdout and "\nclip: " in proc.stdout and "aggc-ls" in proc.stdout


def test_shell_completion_offers_the_groups_options():
    proc = subprocess.run([command("aggc-train"), "-sc", "query=bash"], capture_output=True, text=True, cwd=ROOT,
                          env={**ENV, "COMP_LINE": "aggc-train clip=", "COMP_POINT": "16"})
    assert set(proc.stdout.split()) == {f"clip={p.stem}" for p in (ROOT / "conf" / "clip").glob("*.yaml")}


def test_ls_lists_every_option_with_one_line():
    from aggc.cli import LISTED_GROUPS

    proc = subprocess.run([command("aggc-ls")], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for group in LISTED_GROUPS:
        files = sorted((ROOT / "conf" / group).glob("*.yaml"))
        block = proc.stdout.split(f"\n{group}: " if group != "table" else f"{group}: ", 1)[1].split("\n\n", 1)[0]
        rows = block.splitlines()[1:]
        assert [r.split()[0] for r in rows] == [f.stem for f in files], group
        assert all(len(r.split(None, 1)) == 2 for r in rows), f"{group}: an option without a description"
    bad = subprocess.run([command("aggc-ls"), "tabel"], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert bad.returncode == 2 and "unknown group 'tabel'" in bad.stderr


def evaluate(*args):
    return subprocess.run([sys.executable, "-m", "aggc.evaluate", *args], capture_output=True, text=True, env=ENV, cwd=ROOT)


@pytest.mark.parametrize("run, says", [(None, "run: missing"), ("missing", "no such run directory"),
                                       ("unfinished", "no final model")])
def test_eval_without_a_finished_run_fails_in_two_lines_without_traceback(tmp_path, run, says):
    """aggc-eval checks its run directory at compose time (aggc.cli.CheckEval), as aggc-train
    its config: a FileNotFoundError traceback after imports before."""
    (tmp_path / "unfinished").mkdir()
    proc = evaluate("eval=arith", *([f"run={tmp_path / run}"] if run else []))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert says in lines[0] and lines[1].strip().startswith("fix: pass run=")


@pytest.mark.parametrize("bad", ["max_gen_toks=-5", "batch_size=0", "backend=tgi", "device=gpu", "dtype=float16",
                                 "eval.arith=null", "eval.arith.eval_size=0"])
def test_eval_bad_settings_fail_before_the_model_loads(tmp_path, bad):
    """max_gen_toks=-5 failed in a traceback after loading the model; batch_size=0 evaluated;
    dtype=float16 was refused only once the evaluation had started; eval.arith=null crashed the
    check itself (an AttributeError traceback)."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    proc = evaluate("eval=arith", f"run={run}", bad)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].split(": ", 2)[-1].startswith(bad.split("=")[0]) and not (run / "eval").exists()


def test_eval_sweep_with_one_missing_run_evaluates_nothing(tmp_path):
    finished = tmp_path / "done"
    (finished / "final").mkdir(parents=True)
    (finished / "final" / "config.json").write_text("{}")
    proc = evaluate("-m", "eval=arith", f"run={finished},{tmp_path / 'missing'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 2 and "sweep job" in proc.stderr and "no such run directory" in proc.stderr, proc.stderr
    assert not (finished / "eval").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("args, says", [
    ([], "norms: missing"),
    (["norms={missing}", "out={out}"], "no such file"),
    (["norms={norms}", "out={out}", "clip.beta=1.5"], "clip.beta=1.5: must lie in [0, 1)"),
    (["norms={norms}", "out={out}", "total_steps=-1"], "total_steps=-1"),
])
def test_replay_bad_inputs_fail_in_two_lines_without_traceback(tmp_path, args, says):
    """aggc-replay checks its inputs and clip settings at compose time (aggc.cli.CheckReplay):
    a MissingMandatoryValue / ClipConfigError traceback before."""
    norms = tmp_path / "metrics.jsonl"
    norms.write_text('{"step": 1, "norms": {"q_proj": 1.0}}\n')
    paths = {"norms": norms, "out": tmp_path / "out.jsonl", "missing": tmp_path / "missing.jsonl"}
    proc = subprocess.run([sys.executable, "-m", "aggc.replay", *(a.format(**paths) for a in args)],
                          capture_output=True, text=True, env=ENV, cwd=ROOT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert says in lines[0] and not paths["out"].exists()


def test_tables_render_from_any_working_directory(tmp_path):
    """A console script runs anywhere: aggc-tables read the paper's numbers from the relative
    results/paper (a FileNotFoundError traceback outside the repository); paper_dir is the repo's."""
    proc = subprocess.run([sys.executable, "-m", "aggc.tables", "table=demo", f"runs_root={tmp_path / 'runs'}",
                           f"out_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "table1.md").exists()


def test_arith_templates_are_checked_at_compose_time_for_training_and_evaluation(tmp_path):
    """An unknown arith template failed inside the data generator, after the model had loaded
    (training) or once the evaluation had started; both commands refuse it in two lines."""
    proc = train("data=arith_single_step", "data.templates=[add,divide]", f"runs_root={tmp_path}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "data.templates" in lines[0] and "two_step" in lines[0], proc.stderr
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    proc = evaluate("eval=arith_single_step", f"run={run}", "eval.arith.templates=[divide]")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "eval.arith.templates" in lines[0], proc.stderr
    assert not (run / "eval").exists() and [p.name for p in tmp_path.iterdir()] == ["run"], "no run directory, no evaluation"


def test_a_missing_start_checkpoint_fails_at_compose_time_in_a_sweep(tmp_path):
    """A sweep from another run's model that is not there (what `${aggc.completed_run:...}` gives
    when that run has not finished) stops before the first job, naming the path."""
    missing = tmp_path / "runs" / "m" / "d" / "lora-global-no-completed-run" / "seed0" / "final"
    proc = train("-m", "model=smollm2_135m", "model.kind=hub", f"model.hub_id={missing}", "seed=0,1", f"runs_root={tmp_path / 'out'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "UserWarning" not in proc.stderr, proc.stderr
    assert f"model.hub_id={missing}: no such local directory" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("callback", ["CheckConfig", "CheckEval", "CheckReplay"])
@pytest.mark.parametrize("sweep", [False, True])
def test_a_check_that_crashes_stops_the_command_instead_of_a_warning(monkeypatch, capsys, callback, sweep):
    """Every command's compose-time check: Hydra turns an exception of a callback into a
    warning and starts every job unchecked, so an exception that is no user error (a defect of
    a check, a library's own error) must stop the command, with its traceback."""
    import hydra

    from aggc import cli

    def crash(cfg, seen):
        raise RuntimeError("a defect of the check")

    monkeypatch.setattr(getattr(cli, callback), "check", staticmethod(crash))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    config = OmegaConf.create({"seed": 0})
    with pytest.raises(SystemExit) as exit_:
        if sweep:
            monkeypatch.setattr(cli, "sweep_jobs", lambda cfg: [["seed=0"], ["seed=1"]])
            monkeypatch.setattr(hydra, "compose", lambda *a, **k: config)
            getattr(cli, callback)().on_multirun_start(config, config_name="config")
        else:
            getattr(cli, callback)().on_run_start(config)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a defect of the check" in err
    assert ("(sweep job seed=0)" in err) == sweep, err  # which job of a sweep the check stopped at


@pytest.mark.parametrize("module", ["train", "evaluate", "replay"])
@pytest.mark.parametrize("sweep", [False, True])
def test_a_job_run_in_its_output_directory_is_refused_at_compose_time(tmp_path, module, sweep):
    """The checks read relative paths (model.hub_id, data.path, run, norms) from the directory
    the command starts in: with hydra.job.chdir=true the job read them from its output directory
    (aggc-train: the run directory), so a checked local checkpoint was not found when loading.
    Refused for every command, in a sweep too (its hydra.* overrides are no job's)."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "final" / "config.json").write_text("{}")
    (tmp_path / "norms.jsonl").write_text('{"step": 1, "norms": {"a": 1.0}}\n')
    args = {"train": ["model=smollm2_135m", "model.kind=hub", "model.hub_id=ckpt", "train.max_steps=1", "seed=0,1" if sweep else "seed=0",
                      f"runs_root={tmp_path / 'out'}"],
            "evaluate": ["run=run,run" if sweep else "run=run", "eval=arith", "max_gen_toks=1"],
            "replay": ["norms=norms.jsonl", "out=out/replayed.jsonl", "total_steps=0,1" if sweep else "total_steps=0"]}[module]
    proc = subprocess.run([sys.executable, "-m", f"aggc.{module}", *(["-m"] if sweep else []), *args, "hydra.job.chdir=true",
                           "hydra.sweep.dir=sweep"], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "hydra.job.chdir=true" in lines[0], proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "norms.jsonl", "run"], "no job ran"
