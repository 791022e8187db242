"""A hub model that cannot load here fails at compose time with its id and how to provide it."""

import os
import subprocess
import sys

import pytest

from aggc.config import ConfigError
from aggc.paths import ROOT


def test_offline_missing_hub_model_fails_fast_with_its_id_and_how_to_provide_it(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "aggc.train", "model=llama2_7b", f"runs_root={tmp_path / 'runs'}"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2
    for part in ("meta-llama/Llama-2-7b-hf", "hf auth login", str(tmp_path / "hub"), "model.kind"):
        assert part in proc.stderr
    assert not (tmp_path / "runs").exists()


def _cached(cache, hub_id: str, revision: str = "main") -> None:
    """A checkpoint in huggingface_hub's cache layout (refs/<rev> -> snapshots/<commit>/)."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text("a" * 40)
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40) / "config.json").write_text("{}")


@pytest.mark.parametrize("offline", ["1", "0"])
def test_check_passes_for_a_cached_model_and_online(tmp_path, offline):
    """Cached: passes offline. Missing: refused offline only (online, from_pretrained downloads)."""
    _cached(tmp_path, "org/present")
    code = ("import sys\nfrom aggc.hub import check_hub_model\nfrom aggc.config import ConfigError\n"
            "check_hub_model('org/present')\n"
            "try:\n    check_hub_model('org/absent')\nexcept ConfigError as e:\n    print('refused', e)\nelse:\n    print('passed')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": offline, "HF_HUB_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused model.hub_id=org/absent" if offline == "1" else "passed"), proc.stdout


def test_hub_error_names_the_id():
    from aggc.hub import hub_error

    err = hub_error("org/gated", OSError("You are trying to access a gated repo.\nMore lines"))
    assert isinstance(err, ConfigError) and "org/gated" in str(err) and "gated repo" in str(err) and "More" not in str(err)


def test_a_local_checkpoint_directory_passes_and_a_folder_without_config_or_weights_is_refused(tmp_path, monkeypatch):
    """model.hub_id may name a directory (another run's final/, make demo-real-grpo's start),
    relative to the working directory as from_pretrained reads it: one with config.json and
    weights passes; one without config.json is no checkpoint, and one without weights (killed
    while saving) passed the check before and failed when the job loaded it."""
    from aggc.hub import check_hub_model

    (tmp_path / "run" / "final").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="without config.json"):
        check_hub_model("run/final")
    (tmp_path / "run" / "final" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="config.json but no weights, or empty ones"):
        check_hub_model("run/final")
    (tmp_path / "run" / "final" / "model.safetensors").write_bytes(b"")  # killed while writing it
    with pytest.raises(ConfigError, match="config.json but no weights, or empty ones"):
        check_hub_model("run/final")
    (tmp_path / "run" / "final" / "model.safetensors").write_bytes(b"weights")
    check_hub_model("run/final")
    check_hub_model(str(tmp_path / "run" / "final"))


def test_the_weight_file_names_are_those_save_pretrained_writes():
    """The check names them without importing transformers; they must stay transformers' own."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    from aggc.hub import WEIGHT_FILES

    assert WEIGHT_FILES == (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)


@pytest.mark.parametrize("hub_id", ["runs/demo-real/smollm2_135m/arith/lora-global-no-completed-run/seed0/final",
                                    "/no/such/checkpoint", "org/name/extra"])
def test_a_path_that_is_neither_a_directory_nor_a_repo_id_is_a_config_error(tmp_path, monkeypatch, hub_id):
    """huggingface_hub's own HFValidationError escaped the check before, and Hydra turned it into a
    warning, so the job started unchecked and failed loading the model."""
    from aggc.hub import check_hub_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no such local directory, and not a hub repo id"):
        check_hub_model(hub_id)


@pytest.mark.parametrize("hub_id, revision, says", [
    (None, None, "model.hub_id=None: a hub repo id (org/name) or a local checkpoint directory"),
    (123, None, "model.hub_id=123: a hub repo id"),
    ("", None, "model.hub_id='': a hub repo id"),   # not the working directory, which Path('') is
    ("org/name", 1234567, "model.revision=1234567: a branch, tag or commit hash as a string"),
    ("a" * 300, None, "not a hub repo id"),   # a name too long to stat is no directory, as from_pretrained reads it
])
def test_a_hub_id_or_revision_of_the_wrong_kind_is_a_config_error(tmp_path, monkeypatch, hub_id, revision, says):
    """Values Hydra hands over as null or numbers (`model.revision=1234567`, an all-digit commit
    hash) are user errors in two lines, not a TypeError/OSError traceback from inside the check."""
    from aggc.hub import check_hub_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_hub_model(hub_id, revision)
    assert says in str(err.value)


def test_a_missing_pinned_revision_names_it_and_how_to_download_it(tmp_path):
    """Offline, a cached repo without the pinned revision: the message and its `hf download`
    name the revision (downloading the default branch would not help)."""
    _cached(tmp_path, "org/present")
    code = ("from aggc.hub import check_hub_model\nfrom aggc.config import ConfigError\n"
            "check_hub_model('org/present', 'main')\n"
            "try:\n    check_hub_model('org/present', 'v1.0')\nexcept ConfigError as e:\n    print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "model.revision=v1.0" in proc.stdout and "hf download org/present --revision v1.0" in proc.stdout, proc.stdout


def test_a_local_checkpoint_that_cannot_load_is_not_told_to_download(tmp_path, monkeypatch):
    """A local directory (config.json passes the compose-time check, the weights are missing)
    fails loading with what it lacks, not with `hf download <the path>`."""
    from aggc.hub import hub_error

    (tmp_path / "final").mkdir()
    monkeypatch.chdir(tmp_path)
    err = hub_error("final", OSError("Error no file named model.safetensors found in directory final."))
    assert "model.hub_id=final" in str(err) and "model.safetensors" in str(err) and "weights" in str(err)
    assert "hf download" not in str(err)
    assert "hf download org/name" in str(hub_error("org/name", OSError("404")))
