"""`make <table> LAUNCHER=slurm`'s submission plan (`aggc.submit`), read from the dry run:
training arrays per resource shape, evaluation arrays that wait per cell (aftercorr), later
waves after earlier ones (afterok), the table's job after everything, one concurrency cap
over the grid. (Run on the local Slurm: tests/slurm/test_submit_chain.py.)"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from aggc.config import ConfigError
from aggc.paths import CONF_DIR, ROOT
from aggc.submit import arrays, shares


def grid(tmp_path, *overrides):
    return subprocess.run([sys.executable, "-m", "aggc.grid", f"runs_root={tmp_path}", *overrides], cwd=ROOT, capture_output=True, text=True)


@given(st.lists(st.integers(1, 500), min_size=1, max_size=12), st.integers(1, 64))
def test_shares_cap_the_grid_in_total(sizes, cap):
    if len(sizes) > cap:
        with pytest.raises(ConfigError, match="array_parallelism"):
            shares(sizes, cap)
        return
    out = shares(sizes, cap)
    assert sum(out) <= cap and all(1 <= n <= size for n, size in zip(out, sizes))


@pytest.mark.slow
def test_table1_is_submitted_as_a_dependency_chain_with_full_ft_on_four_gpus(tmp_path):
    proc = grid(tmp_path, "table=table1", "dry_run=true", "launcher=slurm", "table.models=[mistral_7b]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    submits = {m[1]: m[2] for m in re.finditer(r"^would submit (\S+): (sbatch .*)$", proc.stdout, re.M)}
    assert list(submits) == ["train-w1-g1", "eval-w1-g1", "train-w1-g4", "eval-w1-g4", "table"], proc.stdout[-3000:]
    assert "would run: -m aggc" not in proc.stdout  # nothing runs on the login node
    files = {key: (tmp_path / "plan" / f"table1.{key}.txt").read_text().splitlines() for key in submits if key != "table"}
    # Full FT (9 cells: 3 training sets x 3 seeds): 4 tasks x 1 GPU, FSDP2; the other 3 rows 1 GPU
    assert len(files["train-w1-g4"]) == 9 and all("strategy=full_ft" in li and "train.fsdp=full_shard" in li for li in files["train-w1-g4"])
    assert len(files["train-w1-g1"]) == 27 and not any("full_ft" in li or "fsdp" in li for li in files["train-w1-g1"])
    assert "--ntasks-per-node=4" in submits["train-w1-g4"] and "--gpus-per-node=4" in submits["train-w1-g4"]
    assert "--ntasks-per-node=1" in submits["eval-w1-g4"] and "--gpus-per-node=1" in submits["eval-w1-g4"]
    # evaluation task i after training task i (per cell), of the same run directory
    for shape in ("g1", "g4"):
        assert f"--dependency=aftercorr:<train-w1-{shape}>" in submits[f"eval-w1-{shape}"]
        train, evals = files[f"train-w1-{shape}"], files[f"eval-w1-{shape}"]
        assert len(evals) == len(train)
        assert all(e.startswith("-m \"run='") and "eval=" in e for e in evals)
    assert "--dependency=afterany:<train-w1-g1>:<eval-w1-g1>:<train-w1-g4>:<eval-w1-g4>" in submits["table"]
    assert "-m aggc.tables table=table1" in submits["table"]
    caps = [int(re.search(r"--array=0-\d+%(\d+)", submits[k])[1]) for k in files]
    assert sum(caps) <= 16  # slurm.yaml's array_parallelism: the grid's total


def test_a_later_training_wave_waits_for_the_earlier_one(tmp_path):
    """Table 2: STS-B, RTE, MRPC start from the MNLI runs: their training arrays wait for
    every wave-1 training array (afterok)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("grid", overrides=["table=table2", f"runs_root={tmp_path}", "launcher=slurm", "table.grid.seeds=[0]"])
        work = arrays(cfg, OmegaConf.to_container(cfg.table, resolve=True))
    keys = [a.key for a in work]
    wave1 = [k for k in keys if k.startswith("train-w1")]
    assert wave1 and all(a.after == ("afterok", ",".join(wave1)) for a in work if a.key.startswith("train-w2"))
    assert any(k.startswith("train-w2") for k in keys)
    assert all(a.after == ("aftercorr", a.key.replace("eval", "train")) for a in work if a.key.startswith("eval-"))



@pytest.mark.slow
def test_a_later_wave_waits_for_an_earlier_submissions_training_of_its_sources(tmp_path):
    """Resubmitted while the MNLI runs of an earlier submission still train (its STS-B, RTE,
    MRPC tasks were cancelled when one MNLI cell failed): the new wave-2 array waits for
    those tasks too (afterok per task), not only for this submission's wave 1, which may
    be empty; otherwise it starts before its MNLI runs are COMPLETED and fails."""
    from aggc import grid

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("grid", overrides=["table=table2", f"runs_root={tmp_path}", "launcher=slurm", "table.grid.seeds=[0]"])
        spec = OmegaConf.to_container(cfg.table, resolve=True)
        cells = grid.cells(spec)
        dirs = grid.run_dirs(cfg, spec, cells)
        mnli = [dirs[c] for c in cells if c.data == "glue_mnli"]
        for running in (mnli[:1], mnli):  # one MNLI cell still trains / all of them
            training = {run: f"12_{i}" for i, run in enumerate(running)}
            work = arrays(cfg, spec, frozenset(running), training)
            later = [a for a in work if a.key.startswith("train-w2")]
            assert later and all(sorted(a.after_tasks) == sorted(training.values()) for a in later), [(a.key, a.after_tasks) for a in work]
            assert not any(run in a.runs for a in work if a.module == "aggc.train" for run in running)
            assert all(not a.after_tasks for a in work if not a.key.startswith("train-w2"))

def test_rows_with_several_gpus_are_refused_by_the_local_launcher_before_training(tmp_path):
    proc = grid(tmp_path, "table=table1", "table.models=[llama2_7b]", "table.grid.datasets={metamathqa: [gsm8k]}")
    assert proc.returncode != 0 and "Full FT ask for several GPUs per cell (resources.gpus)" in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]  # nothing trained


@pytest.mark.parametrize("resources", [{"gpus": 0}, {"gpus": "4"}, {"gpus": True}, {"gpus": 4, "cpus": 8}])
def test_a_bad_resources_entry_is_refused(resources):
    from aggc.grid import cells

    spec = {"name": "t", "models": ["tiny_llama"], "rows": [{"label": "Full FT", "strategy": "full_ft", "clip": "global", "resources": resources}],
            "grid": {"seeds": [0], "datasets": {"arith": ["arith"]}}}
    with pytest.raises(ConfigError, match="row 'Full FT': resources=.*only `gpus`, a positive integer"):
        cells(spec)


def test_new_sbatch_options_reach_the_arrays_and_not_the_cells(tmp_path):
    """`+hydra.launcher.additional_parameters.<key>=...` in train_args (the form Hydra accepts
    for a key the launcher config lacks) becomes the training arrays' sbatch option, true as
    a bare flag (as submitit writes it), and stays out of the cells' overrides; it was
    dropped (the filters knew only `hydra.launcher.` without `+`)."""
    extra = "+hydra.launcher.additional_parameters.begin=now+600 +hydra.launcher.additional_parameters.exclusive=true"
    proc = grid(tmp_path, "table=table4", "tiny=true", "dry_run=true", "launcher=slurm_local", f"train_args='{extra}'")
    assert proc.returncode == 0, proc.stderr[-3000:]
    submits = {m[1]: m[2].split() for m in re.finditer(r"^would submit (\S+): (sbatch .*)$", proc.stdout, re.M)}
    assert {"--begin=now+600", "--exclusive"} <= set(submits["train-w1-g1"]), submits
    assert "--begin=now+600" not in submits["eval-w1-g1"]
    assert "hydra.launcher" not in (tmp_path / "plan" / "table4.train-w1-g1.txt").read_text()


@pytest.mark.skipif(not shutil.which("squeue"), reason="no Slurm client commands")
def test_nothing_is_submitted_when_squeue_fails(tmp_path):
    """squeue cannot reach the controller (a timeout on a busy cluster reads the same): the
    earlier submission's tasks are not taken as ended (their cells would be queued twice);
    the driver stops before writing or submitting anything."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=9\nMessageTimeout=2\n"
                    "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=local Nodes=localhost Default=YES\n")
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "table4.jobs.json").write_text(json.dumps([{"key": "train-w1-g1", "job": "5", "runs": [str(tmp_path / "a")]}]))
    proc = subprocess.run([sys.executable, "-m", "aggc.grid", f"runs_root={tmp_path}", "table=table4", "tiny=true", "launcher=slurm_local"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "SLURM_CONF": str(conf)})
    assert proc.returncode != 0 and "squeue failed" in proc.stderr and "nothing submitted" in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not list((tmp_path / "plan").glob("table4.*-w*.txt")), "an array's cells file written"
    assert len(json.loads((tmp_path / "plan" / "table4.jobs.json").read_text())) == 1


@pytest.mark.parametrize("extra", ["hydra.launcher.tasks_per_node=4 hydra.launcher.gpus_per_node=4", "hydra.launcher.gpus_per_node=2"])
def test_several_gpus_per_cell_from_the_launcher_keys_are_refused(tmp_path, extra):
    """The Hydra launcher's way to give a cell 4 GPUs (tasks_per_node=gpus_per_node=4), passed
    to make <table> LAUNCHER=slurm, would have given every 1-GPU row 4 GPUs and one process,
    and Full FT 16 (gpus_per_node is per task here): refused, naming the rows' resources."""
    proc = grid(tmp_path, "table=table4", "tiny=true", "dry_run=true", "launcher=slurm_local", f"train_args='{extra}'")
    assert proc.returncode != 0 and "resources.gpus" in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "would submit" not in proc.stdout
