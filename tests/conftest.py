"""Settings every test directory shares."""

import pytest


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite on one pytest-xdist worker per core (`--dist loadgroup`),
    a test file per group: its module fixtures (a tiny table's runs, every paper table's
    cells) are built once, on one worker, not once per worker. The tests that use the local
    Slurm cluster are one group: they share its one node's CPUs and wait for their jobs with
    timeouts, so they run one after another."""
    for item in items:
        group = "slurm" if "slurm_cluster" in item.fixturenames else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
