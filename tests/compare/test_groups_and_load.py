"""Loading run directories, refusing incomparable runs, grouping by configuration minus seed, labels."""

from __future__ import annotations

import pytest

from recmtl.compare import compare, group_runs, load_runs
from recmtl.compare.groups import grid_of
from recmtl.errors import RecmtlError
from tests.compare.conftest import make_run


def test_groups_are_configs_minus_seed_with_labels_of_the_differing_options(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, f"ew-s{seed}", method="ew", seed=seed)
        make_run(tmp_path, f"ew-lr-s{seed}", method="ew", seed=seed, lr=0.001)
        for alpha in (1.1, 1.5):
            make_run(
                tmp_path,
                f"p{alpha}-s{seed}",
                method={"name": "pmtrec", "alpha": alpha, "tau": 1.0},
                seed=seed,
            )
    groups = group_runs(load_runs([tmp_path]))
    labels = sorted(g.label for g in groups)
    assert labels == [
        "ew (lr=0.001)",
        "ew (lr=0.01)",
        "pmtrec (alpha=1.1, lr=0.01)",
        "pmtrec (alpha=1.5, lr=0.01)",
    ]
    assert all(g.seeds == (0, 1) for g in groups)
    assert grid_of(groups) == {}  # one option varies, not two


def test_one_group_per_method_is_labelled_by_the_method_alone(tmp_path):
    make_run(tmp_path, "ew", method="ew")
    make_run(tmp_path, "pm", method={"name": "pmtrec", "alpha": 1.1})
    assert [g.label for g in group_runs(load_runs([tmp_path]))] == ["ew", "pmtrec"]


def test_a_two_option_grid_is_found(tmp_path):
    for alpha in (1.0, 1.5):
        for tau in (0.5, 2.0):
            make_run(tmp_path, f"a{alpha}-t{tau}", method={"name": "pmtrec", "alpha": alpha, "tau": tau})
    make_run(tmp_path, "ew", method="ew")
    grids = grid_of(group_runs(load_runs([tmp_path])))
    assert list(grids) == ["pmtrec"]
    assert grids["pmtrec"][:2] == ("alpha", "tau") and len(grids["pmtrec"][2]) == 4


def test_runs_on_different_data_are_refused_naming_both(tmp_path):
    a = make_run(tmp_path, "a", method="ew")
    b = make_run(tmp_path, "b", method="pmtrec", data_hash="b" * 64)
    with pytest.raises(RecmtlError, match="different data") as info:
        load_runs([a, b])
    assert str(a) in str(info.value) and str(b) in str(info.value)


def test_runs_evaluated_on_different_splits_are_refused(tmp_path):
    a = make_run(tmp_path, "a", method="ew")
    b = make_run(tmp_path, "b", method="pmtrec", split="valid")
    with pytest.raises(RecmtlError, match="evaluated on test but .* on valid"):
        load_runs([a, b])


def test_a_run_not_yet_evaluated_is_named(tmp_path):
    run = make_run(tmp_path, "raw", evaluated=False)
    with pytest.raises(RecmtlError, match=r"recmtl evaluate .*raw. first"):
        load_runs([run])


def test_a_folder_without_runs_is_an_error(tmp_path):
    with pytest.raises(RecmtlError, match="neither a run directory"):
        load_runs([tmp_path])


def test_baseline_by_label_or_method_and_ambiguity(tmp_path):
    make_run(tmp_path, "ew", method="ew")
    make_run(tmp_path, "p1", method={"name": "pmtrec", "alpha": 1.1})
    make_run(tmp_path, "p2", method={"name": "pmtrec", "alpha": 1.5})
    runs = load_runs([tmp_path])
    assert compare(runs, baseline="ew").baseline == "ew"
    assert compare(runs, baseline="pmtrec (alpha=1.5)").baseline == "pmtrec (alpha=1.5)"
    with pytest.raises(RecmtlError, match="2 groups use method pmtrec"):
        compare(runs, baseline="pmtrec")
    with pytest.raises(RecmtlError, match="no such group"):
        compare(runs, baseline="mgda")
    with pytest.raises(RecmtlError, match="--metric hit@20"):
        compare(runs, focus="hit@20")


def test_a_run_written_before_an_option_existed_groups_with_runs_at_its_default(tmp_path):
    """No aux_sampling (a training option) and no norm_source / beta (PMTRec's): read at their defaults, so
    such a run joins the group of runs that record the defaults and is apart from the others."""
    make_run(tmp_path, "old-s0", method={"name": "pmtrec", "alpha": 1.1}, seed=0)
    make_run(tmp_path, "new-s1", method={"name": "pmtrec", "alpha": 1.1, "norm_source": "step", "beta": 0.9},
             seed=1, aux_sampling="independent")  # fmt: skip
    make_run(tmp_path, "ema-s0", method={"name": "pmtrec", "alpha": 1.1, "norm_source": "ema"}, seed=0)
    make_run(tmp_path, "aligned-s0", method={"name": "pmtrec", "alpha": 1.1}, seed=0, aux_sampling="aligned")
    groups = {g.label: g.seeds for g in group_runs(load_runs([tmp_path]))}
    assert groups == {
        "pmtrec (norm_source=step, aux_sampling=independent)": (0, 1),
        "pmtrec (norm_source=ema, aux_sampling=independent)": (0,),
        "pmtrec (norm_source=step, aux_sampling=aligned)": (0,),
    }
