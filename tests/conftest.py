"""Settings every test directory shares."""

import pytest


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite on one pytest-xdist worker per core (`--dist loadgroup`).
    The tests that use the local Slurm cluster share its one node's CPUs and wait for their
    jobs with timeouts, so they run on one worker, one after another."""
    for item in items:
        if "slurm_cluster" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("slurm"))
