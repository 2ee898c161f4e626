"""The explicit registry and make_aggregator's errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recmtl.aggregators import AGGREGATORS, EW, PMTRec, Single, StepInfo, make_aggregator
from recmtl.errors import ConfigError

# METHODS.md §6: every method the toolkit promises, under the name users know it by
PROMISED = {
    "single", "ew", "pmtrec", "rlw", "uw", "dwa", "gradnorm", "famo", "dbmtl", "mgda", "pcgrad", "gradvac",
    "cagrad", "imtl", "nashmtl", "alignedmtl", "upgrad", "dualproj", "fairgrad", "pcd", "gradcraft",
}  # fmt: skip


def test_registry_names():
    assert set(AGGREGATORS) == PROMISED
    assert (AGGREGATORS["single"], AGGREGATORS["ew"], AGGREGATORS["pmtrec"]) == (Single, EW, PMTRec)
    for name, cls in AGGREGATORS.items():
        assert cls.name == name


def test_make_aggregator_builds_with_params():
    agg = make_aggregator("pmtrec", alpha=1.3, tau=0.5, combine="raw", focus="logit")
    assert agg == PMTRec(alpha=1.3, tau=0.5, combine="raw", focus="logit")
    assert make_aggregator("ew") == EW()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        make_aggregator("pmtrek")
    message = str(err.value)
    assert "pmtrek" in message
    for name in AGGREGATORS:
        assert name in message


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match="gamma") as err:
        make_aggregator("pmtrec", alpha=1.2, gamma=3)
    assert "alpha" in str(err.value)  # accepted ones listed
    with pytest.raises(ConfigError, match="alpha"):
        make_aggregator("ew", alpha=1.2)


def test_aggregators_are_frozen_and_hashable():
    agg = PMTRec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        agg.alpha = 2.0  # type: ignore[misc]
    assert len({PMTRec(), PMTRec(), PMTRec(alpha=1.2)}) == 2


def test_defaults_follow_the_spec():
    # METHODS.md §4's defaults, except `combine`: raw, the reading the study supports (docs/training.md)
    assert PMTRec() == PMTRec(alpha=1.1, tau=1.0, combine="raw", focus="norm", main_task=0)
    assert EW.fixed_weights and Single.fixed_weights and not PMTRec.fixed_weights
    assert torch.equal(EW().fixed_task_weights(3), torch.ones(3))
    assert torch.equal(Single().fixed_task_weights(3), torch.tensor([1.0, 0.0, 0.0]))
    assert PMTRec().fixed_task_weights(3) is None


def test_single_main_task_validation():
    with pytest.raises(ConfigError, match="main_task"):
        Single(main_task=-2)
    with pytest.raises(ConfigError, match="main_task=2"):
        Single(main_task=2)(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool), None, StepInfo())
