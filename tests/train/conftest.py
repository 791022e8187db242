"""Fixtures the training-stage tests share."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from a second thread, and on a busy 2-core machine its
    spinning makes a step ~10x slower; 1 thread also matches the grid's subprocesses
    (OMP_NUM_THREADS=1), so a resumed run can be compared bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
