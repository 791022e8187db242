"""The training entry point leaves its process group before the interpreter shuts down
(a gloo group left to interpreter finalization can abort a rank after a finished run:
CI saw 'terminate called without an active exception', SIGABRT, exit code 1)."""

import atexit
from types import SimpleNamespace

import pytest
import torch.distributed as dist

from aggc.train import __main__ as entry


def test_leave_process_group_destroys_an_open_group_and_is_a_no_op_without_one(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        entry.leave_process_group()
        assert not dist.is_initialized()
        entry.leave_process_group()  # nothing open: no error
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_the_entry_point_registers_the_leave_once_however_many_runs(monkeypatch, tmp_path):
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", lambda f: registered.remove(f) if f in registered else None)
    monkeypatch.setattr(entry, "run", lambda cfg, out: None)
    hydra_config = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(tmp_path)))
    monkeypatch.setattr(entry, "HydraConfig", SimpleNamespace(get=lambda: hydra_config))
    for _ in range(3):
        entry.main.__wrapped__(None)  # the function under @hydra.main, as a sweep calls it per run
    assert registered == [entry.leave_process_group]


def test_a_run_that_raised_leaves_no_teardown_registered(monkeypatch, tmp_path):
    """A rank that raised may have a collective pending; destroying the group would wait on it
    instead of exiting, so the leave is registered only after runs that ended."""
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", lambda f: registered.remove(f) if f in registered else None)
    hydra_config = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(tmp_path)))
    monkeypatch.setattr(entry, "HydraConfig", SimpleNamespace(get=lambda: hydra_config))

    def fails(cfg, out):
        raise RuntimeError("a rank failed mid-step")

    monkeypatch.setattr(entry, "run", lambda cfg, out: None)
    entry.main.__wrapped__(None)  # a sweep's first run ends
    monkeypatch.setattr(entry, "run", fails)
    with pytest.raises(RuntimeError):
        entry.main.__wrapped__(None)  # its second raises
    assert registered == []
