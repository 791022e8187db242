"""A completed run re-checked on a read-only disk (an archive, a results mount): the same
command answers "COMPLETED; nothing to do" and writes nothing."""

import subprocess

import pytest

from ._helpers import only_run, train_cli


@pytest.fixture
def read_only(tmp_path):
    """`tmp_path/runs` bind-mounted read-only at `tmp_path/ro` (needs mount rights: root)."""
    source, target = tmp_path / "runs", tmp_path / "ro"
    source.mkdir()
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True).returncode == 0
    if not mounted or subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True).returncode:
        if mounted:
            subprocess.run(["umount", str(target)])
        pytest.skip("no rights to mount a read-only bind mount here")
    yield source, target
    subprocess.run(["umount", str(target)], check=True)


@pytest.mark.slow
def test_a_completed_run_is_rechecked_on_a_read_only_disk(read_only):
    source, target = read_only
    train_cli(source)
    run = only_run(target)
    assert (run / "COMPLETED").exists()
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    again = train_cli(target, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{run} is COMPLETED; nothing to do" in again.stdout + again.stderr
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
