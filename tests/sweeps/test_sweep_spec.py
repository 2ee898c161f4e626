"""Sweep files: expansion into cells (count, order, names, configs); errors naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from recmtl.aggregators import PCGrad, PMTRec, Single
from recmtl.errors import ConfigError
from recmtl.sweeps import load_sweep
from tests.sweeps.conftest import write_sweep

FULL = """
name = "main"
data = "data/ciao"
runs_dir = "out/main"
seeds = [0, 1, 2]
[options]
aux = ["social", "category"]
lr = 0.005
[grid]
batch_size = [1024, 2048]
[methods.single]
[methods.ew]
[methods.pmtrec]
options = { combine = "unit" }
grid = { alpha = [1.0, 1.1, 1.5], tau = [0.5, 1.0] }
[methods.pcgrad-global]
method = "pcgrad"
train = { mode = "global" }
"""


def test_cells_cross_methods_grids_and_seeds_in_a_stable_order(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "main.toml", FULL))
    cells = sweep.cells()
    # single, ew, pcgrad: 2 batch sizes x 3 seeds; pmtrec: 2 x 3 alphas x 2 taus x 3 seeds
    assert len(cells) == 3 * 2 * 3 + 2 * 3 * 2 * 3
    assert [c.name for c in cells[:4]] == [
        "single-batch_size=1024-s0",
        "single-batch_size=1024-s1",
        "single-batch_size=1024-s2",
        "single-batch_size=2048-s0",
    ]
    pmtrec = [c for c in cells if c.label == "pmtrec"]
    assert pmtrec[0].name == "pmtrec-batch_size=1024-alpha=1.0-tau=0.5-s0"
    assert pmtrec[3].name == "pmtrec-batch_size=1024-alpha=1.0-tau=1.0-s0"
    assert pmtrec[6].name == "pmtrec-batch_size=1024-alpha=1.1-tau=0.5-s0"
    assert [c.label for c in cells] == sorted(
        (c.label for c in cells), key=["single", "ew", "pmtrec", "pcgrad-global"].index
    )
    assert [c.name for c in load_sweep(tmp_path / "main.toml").cells()] == [c.name for c in cells]
    assert len({c.name for c in cells}) == len(cells)

    cell = pmtrec[7]  # alpha 1.1, tau 0.5, seed 1
    assert cell.name == "pmtrec-batch_size=1024-alpha=1.1-tau=0.5-s1"
    assert cell.group == "pmtrec-batch_size=1024-alpha=1.1-tau=0.5" and cell.seed == 1
    assert cell.run_dir == Path("out/main") / cell.name
    assert cell.varied == {"batch_size": 1024, "alpha": 1.1, "tau": 0.5}
    config = cell.config
    assert config.method == PMTRec(alpha=1.1, tau=0.5, combine="unit")
    assert (config.seed, config.batch_size, config.lr, config.aux) == (1, 1024, 0.005, ("social", "category"))
    assert config.data == Path("data/ciao") and config.name == cell.name
    pcgrad = next(c for c in cells if c.label == "pcgrad-global")
    assert isinstance(pcgrad.config.method, PCGrad) and pcgrad.config.mode == "global"
    assert all(c.config.mode == "row" for c in cells if c.label != "pcgrad-global")


def test_only_varying_keys_appear_in_names_and_defaults(tmp_path):
    text = """
    data = "d"
    [grid]
    lr = [0.01]
    [methods.single]
    [methods.pmtrec]
    grid = { alpha = [1.2], tau = [0.5, 2.0] }
    """
    sweep = load_sweep(write_sweep(tmp_path / "stem.toml", text))
    assert sweep.name == "stem" and sweep.runs_dir == Path("runs/sweeps/stem") and sweep.seeds == (0,)
    cells = sweep.cells()
    assert [c.name for c in cells] == ["single-s0", "pmtrec-tau=0.5-s0", "pmtrec-tau=2.0-s0"]
    assert cells[0].varied == {} and cells[2].varied == {"tau": 2.0}
    assert cells[2].config.method.alpha == 1.2 and cells[2].config.lr == 0.01
    assert isinstance(cells[0].config.method, Single)


def test_list_values_are_joined_in_names(tmp_path):
    text = """
    data = "d"
    [grid]
    aux = [["social"], ["social", "category"]]
    [methods.ew]
    """
    cells = load_sweep(write_sweep(tmp_path / "s.toml", text)).cells()
    assert [c.name for c in cells] == ["ew-aux=social-s0", "ew-aux=social+category-s0"]
    assert cells[1].config.aux == ("social", "category")


BASE = 'data = "d"\nseeds = [0]\n'


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("bogus = 1\n[methods.ew]\n", ["unknown key 'bogus'"]),
        ('[methods.ew]\noptions = "unit"\n', ["[methods.ew]: options", "expected a table"]),
        ("[options]\nlearning_rate = 0.1\n[methods.ew]\n", ["[options]", "unknown key 'learning_rate'"]),
        ("[options]\nlr = -1.0\n[methods.ew]\n", ["[options]", "--lr -1.0 out of range"]),
        ("[options]\nseed = 3\n[methods.ew]\n", ["[options]", "'seed'", "seeds"]),
        ('[options]\naux = ["friends"]\n[methods.ew]\n', ["[options]", "friends"]),
        ("[grid]\nlr = []\n[methods.ew]\n", ["[grid]: lr", "empty list"]),
        ("[grid]\nlr = 0.1\n[methods.ew]\n", ["[grid]: lr", "expected a list"]),
        ("[grid]\nlr = [0.1, 0.1]\n[methods.ew]\n", ["[grid]: lr", "listed twice"]),
        ("[grid]\nlr = [0.1, -2.0]\n[methods.ew]\n", ["[grid] lr=-2.0", "out of range"]),
        ("[grid]\nwarmup = [1, 2]\n[methods.ew]\n", ["[grid]", "unknown key 'warmup'"]),
        ("", ["no method", "[methods.LABEL]"]),
        ("[methods.nosuch]\n", ["[methods.nosuch]", "unknown method"]),
        ("[methods.ew]\nlr = 0.1\n", ["[methods.ew]", "unknown key 'lr'"]),
        ("[methods.pmtrec]\noptions = { gamma = 1 }\n", ["[methods.pmtrec]", "no option 'gamma'"]),
        ("[methods.pmtrec]\noptions = { alpha = 0.5 }\n", ["[methods.pmtrec] options", "alpha"]),
        ("[methods.pmtrec]\ngrid = { alpha = [1.1, 50.0] }\n", ["[methods.pmtrec] grid alpha=50.0", "alpha"]),
        ("[methods.pmtrec]\ngrid = { tau = [] }\n", ["[methods.pmtrec] grid: tau", "empty list"]),
        ("[methods.pmtrec]\ngrid = { gamma = [1, 2] }\n", ["[methods.pmtrec]", "no option 'gamma'"]),
        ('[methods.ew]\ntrain = { mode = "diagonal" }\n', ["[methods.ew] train", "--mode diagonal"]),
        ('[methods.ew]\ntrain = { method = "pcgrad" }\n', ["[methods.ew] train", "'method'"]),
        ("[methods.ew]\nmethod = 3\n", ["[methods.ew]", "method"]),
        ('[methods."a/b"]\nmethod = "ew"\n', ["[methods.a/b]", "directory name"]),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, body, fragments):
    path = write_sweep(tmp_path / "bad.toml", BASE + body)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("seeds = []\n[methods.ew]\n", "seeds: empty list"),
        ('seeds = [0, "1"]\n[methods.ew]\n', "seeds: expected a list of integers"),
        ("[methods.ew]\n", "missing key 'data'"),
    ],
)
def test_seeds_and_data_errors(tmp_path, text, fragment):
    if "missing" not in fragment:
        text = 'data = "d"\n' + text
    path = write_sweep(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=fragment):
        load_sweep(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_sweep(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sweep(write_sweep(tmp_path / "bad.toml", "data = \n"))


def test_a_grid_key_also_fixed_for_a_label_is_an_error(tmp_path):
    text = BASE + "[grid]\nbatch_size = [256, 512]\n[methods.ew]\ntrain = { batch_size = 128 }\n"
    with pytest.raises(ConfigError, match=r"\[methods.ew\] train: 'batch_size' is also crossed in \[grid\]"):
        load_sweep(write_sweep(tmp_path / "s.toml", text))
    text = BASE + "[methods.pmtrec]\noptions = { tau = 1.0 }\ngrid = { tau = [0.5, 2.0] }\n"
    with pytest.raises(ConfigError, match="'tau' is both fixed"):
        load_sweep(write_sweep(tmp_path / "s.toml", text))


def test_shipped_smoke_sweep_loads():
    root = Path(__file__).resolve().parents[2]
    sweep = load_sweep(root / "sweeps" / "smoke.toml")
    cells = sweep.cells()
    assert [c.name for c in cells] == ["single-s0", "single-s1", "pmtrec-s0", "pmtrec-s1"]
    assert all(c.config.epochs == 2 and c.config.aux == ("social", "category") for c in cells)
    assert sweep.data == Path("data/synthetic")
