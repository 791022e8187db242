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


@pytest.fixture
def exit_handlers(monkeypatch, tmp_path):
    """The entry point's atexit registrations, in a list, with Hydra's output directory and the
    run itself stubbed: what is checked is the registration, not training."""
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", lambda f: registered.remove(f) if f in registered else None)
    hydra_config = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(tmp_path)))
    monkeypatch.setattr(entry, "HydraConfig", SimpleNamespace(get=lambda: hydra_config))
    monkeypatch.setattr(entry, "run", lambda cfg, out: None)
    return registered


def test_the_entry_point_registers_the_leave_once_however_many_runs(exit_handlers):
    for _ in range(3):
        entry.main.__wrapped__(None)  # the function under @hydra.main, as a sweep calls it per run
    assert exit_handlers == [entry.leave_process_group]


def test_a_run_that_raised_leaves_no_teardown_registered(exit_handlers, monkeypatch):
    """A rank that raised may have a collective pending; destroying the group would wait on it
    instead of exiting, so the leave is registered only after runs that ended."""

    def fails(cfg, out):
        raise RuntimeError("a rank failed mid-step")

    entry.main.__wrapped__(None)  # a sweep's first run ends
    monkeypatch.setattr(entry, "run", fails)
    with pytest.raises(RuntimeError):
        entry.main.__wrapped__(None)  # its second raises
    assert exit_handlers == []
