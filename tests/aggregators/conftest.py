"""Fixtures for the aggregator tests (cases themselves live in aggregator_cases.py)."""

from __future__ import annotations

import pytest
import torch

from recmtl.aggregators import make_aggregator
from tests.aggregators.aggregator_cases import CONFIGS, config_id


@pytest.fixture(params=CONFIGS, ids=[config_id(c) for c in CONFIGS])
def aggregator(request):
    name, params = request.param
    return make_aggregator(name, **params)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tensors of the method tests are tiny and the solvers run many small ops: one intra-op thread
    avoids OpenMP oversubscription stalls on a busy 2-core machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
