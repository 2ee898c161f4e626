"""One intra-op torch thread for a test directory: import :func:`one_torch_thread` into its conftest.py
(``from tests.threads import one_torch_thread  # noqa: F401``) and every test module there runs with it."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP stalls on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
