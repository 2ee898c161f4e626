"""Fixtures for the encoder tests: the training tests' tiny dataset and one torch thread."""

from __future__ import annotations

from tests.train.conftest import one_torch_thread, tiny_data  # noqa: F401  (fixtures, re-exported)
