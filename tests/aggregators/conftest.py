"""Fixtures for the aggregator tests (cases themselves live in aggregator_cases.py)."""

from __future__ import annotations

import pytest

from recmtl.aggregators import make_aggregator
from tests.aggregators.aggregator_cases import CONFIGS, config_id


@pytest.fixture(params=CONFIGS, ids=[config_id(c) for c in CONFIGS])
def aggregator(request):
    name, params = request.param
    return make_aggregator(name, **params)
