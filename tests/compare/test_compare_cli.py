"""`recmtl compare` end to end: 2 methods x 2 seeds of tiny trained and evaluated runs, through CliRunner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from recmtl.compare import compare, load_runs
from recmtl.eval.run_eval import evaluate_run
from recmtl.train.loop import fit
from tests.cli.conftest import assert_one_line_error
from tests.train.conftest import prepare_tiny, quick_config

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("compare")
    data = prepare_tiny(root / "tiny")
    for method in ("ew", "pmtrec"):
        for seed in (0, 1):
            run = root / "runs" / f"{method}-s{seed}"
            fit(quick_config(data, method=method, seed=seed, epochs=2, aux=("social",)), run)
            evaluate_run(run)
    torch.set_num_threads(before)
    return root


def test_compare_cli_writes_tables_and_plots(tiny_runs, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(tiny_runs / "runs"), "--baseline", "ew", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pmtrec" in result.stdout and "baseline" in result.stdout and "wrote" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["activity.png", "compare.csv", "compare.md", "compare.tex", "compare_instruments.csv",
                     "compare_tests.csv", "main_weight_by_activity.png", "task_weights.png",
                     "valid_curve.png"]  # fmt: skip
    assert (out / "main_weight_by_activity.png").stat().st_size > 1000  # the trained runs' user weights
    md = (out / "compare.md").read_text()
    assert "| pmtrec | 2 |" in md and "Paired tests vs ew on ndcg@20" in md
    assert "## Where tasks meet" in md  # the trained runs' instruments


def test_compare_cli_no_plots_and_one_line_errors(tiny_runs, tmp_path):
    runs = tiny_runs / "runs"
    result = runner.invoke(app, ["compare", str(runs / "ew-s0"), str(runs / "pmtrec-s0"), "--out",
                                 str(tmp_path / "o"), "--no-plots"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "o").glob("*.png"))
    bad = runner.invoke(app, ["compare", str(runs), "--baseline", "mgda"])
    assert_one_line_error(bad, "--baseline mgda")
    missing = runner.invoke(app, ["compare", str(tmp_path / "nothing")])
    assert_one_line_error(missing, "run directory not found")


def test_activity_buckets_are_the_trainers_row_groups(tiny_runs):
    from recmtl.data.store import open_dataset
    from recmtl.data.tensors import TrainData
    from recmtl.train.loop import row_groups

    c = compare(load_runs([tiny_runs / "runs"]), baseline="ew")
    assert c.activity_from == "train"
    data = TrainData.load(open_dataset(tiny_runs / "tiny"), torch.device("cpu"))
    groups = row_groups(data, torch.device("cpu"))[: data.n_users].numpy() - 1  # 0 cold, 1 mid, 2 heavy
    run = c.groups[0].runs[0]
    users = run.per_user["user_id"].to_numpy()
    expected = np.bincount(groups[users], minlength=3).tolist()
    got = c.activity.filter(c.activity["group"] == c.groups[0].label)["n_users"].to_list()
    assert got == expected
