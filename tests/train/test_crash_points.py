"""A crash between the end-of-epoch writes (best.safetensors, last.safetensors, metrics.parquet) loses at
most that epoch: ``fit(..., resume=True)`` then reaches exactly the uninterrupted run. Also what a resume
reports (where it restarts) and what an interrupt says is kept."""

from __future__ import annotations

import signal
from pathlib import Path

import polars as pl
import pytest

from recmtl.errors import RecmtlError
from recmtl.runs import BEST, LAST, load_tensors
from recmtl.train import loop as loop_module
from recmtl.train.loop import TrainingInterrupted, fit
from tests.train.conftest import Interrupt, assert_same_tensors, metrics_without_wall, quick_config

EPOCHS = 3


class Crash(Exception):
    """Stands for the process dying at that point: the writes after it never happen."""


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def full_run(tiny_data, tmp_path_factory):
    config = quick_config(tiny_data, aux=("social",), epochs=EPOCHS)
    run = tmp_path_factory.mktemp("full") / "full"
    fit(config, run)
    return config, run


def crash_at(monkeypatch, target: str, epoch: int, when: str, exc: BaseException) -> None:
    """Raise ``exc`` once, ``when`` ("before" | "after") ``fit`` writes ``target`` (best, last, metrics)
    for ``epoch``."""
    armed = {"on": True}
    real_save, real_metrics = loop_module.save_tensors, loop_module.write_metrics

    def hit(name: str, this_epoch: int) -> bool:
        if armed["on"] and name == target and this_epoch == epoch:
            armed["on"] = False
            return True
        return False

    def save_tensors(path, tensors, meta):
        name = {BEST: "best", LAST: "last"}[Path(path).name]
        here = hit(name, meta["epoch"] if name == "best" else meta["loop"]["epoch"])
        if here and when == "before":
            raise exc
        real_save(path, tensors, meta)
        if here and when == "after":
            raise exc

    def write_metrics(run_dir, history):
        here = hit("metrics", history[-1]["epoch"])
        if here and when == "before":
            raise exc
        real_metrics(run_dir, history)
        if here and when == "after":
            raise exc

    monkeypatch.setattr(loop_module, "save_tensors", save_tensors)
    monkeypatch.setattr(loop_module, "write_metrics", write_metrics)


#: (what, when): the crash points of one epoch, in the order fit writes. ``kept``: does the checkpoint
#: (last.safetensors) already hold the epoch when the crash happens?
CRASH_POINTS = [
    pytest.param("best", "before", False, id="before-best"),
    pytest.param("last", "before", False, id="between-best-and-last"),
    pytest.param("metrics", "before", True, id="between-last-and-metrics"),
    pytest.param("metrics", "after", True, id="after-metrics"),
]


@pytest.mark.parametrize("epoch", [1, EPOCHS - 1], ids=["middle-epoch", "final-epoch"])
@pytest.mark.parametrize("target, when, kept", CRASH_POINTS)
def test_a_crash_at_each_end_of_epoch_write_resumes_to_the_uninterrupted_result(
    full_run, tmp_path, monkeypatch, target, when, kept, epoch
):
    config, full = full_run
    assert pl.read_parquet(full / "metrics.parquet")["best"][epoch], "the crash epoch must write best"
    run = tmp_path / "r"
    crash_at(monkeypatch, target, epoch, when, Crash())
    with pytest.raises(Crash):
        fit(config, run)
    assert leftovers(run) == []
    _, meta = load_tensors(run / LAST)
    assert meta["loop"]["epoch"] == (epoch if kept else epoch - 1)
    rows = pl.read_parquet(run / "metrics.parquet").height
    assert rows == (epoch + 1 if (target, when) == ("metrics", "after") else epoch)

    callbacks = Interrupt(-1)
    fit(config, run, resume=True, callbacks=callbacks)
    start = epoch + 1 if kept else epoch
    assert callbacks.resumed[0][0] == start and callbacks.seen_epochs == list(range(start, EPOCHS))
    assert metrics_without_wall(run).equals(metrics_without_wall(full))
    assert_same_tensors(run / LAST, full / LAST)
    assert_same_tensors(run / BEST, full / BEST)
    assert load_tensors(run / BEST)[1] == load_tensors(full / BEST)[1]
    assert leftovers(run) == []


@pytest.mark.parametrize(
    "target, when, last_epoch",
    [("best", "before", 0), ("last", "before", 0), ("metrics", "before", 1), ("metrics", "after", 1)],
)
def test_ctrl_c_during_the_writes_names_the_last_kept_epoch(
    full_run, tmp_path, monkeypatch, target, when, last_epoch
):
    config, _ = full_run
    crash_at(monkeypatch, target, 1, when, KeyboardInterrupt())
    with pytest.raises(TrainingInterrupted) as err:
        fit(config, tmp_path / "r")
    assert isinstance(err.value, KeyboardInterrupt)
    assert (err.value.run_dir, err.value.last_epoch) == (tmp_path / "r", last_epoch)
    _, meta = load_tensors(tmp_path / "r" / LAST)
    assert meta["loop"]["epoch"] == last_epoch  # what the message says is kept is what a resume continues
    kept = "epoch 0 is kept" if last_epoch == 0 else "epochs 0-1 are kept"
    assert str(err.value) == (
        f"{kept} in {tmp_path / 'r'}; continue with: recmtl train --resume {tmp_path / 'r'}"
    )


def test_ctrl_c_in_the_first_epoch_says_no_epoch_finished(full_run, tmp_path):
    config, _ = full_run
    with pytest.raises(TrainingInterrupted) as err:
        fit(config, tmp_path / "r", callbacks=Interrupt(0, 1))
    assert err.value.last_epoch == -1
    assert str(err.value).startswith(f"no epoch had finished in {tmp_path / 'r'}")
    assert str(err.value).endswith(f"continue with: recmtl train --resume {tmp_path / 'r'}")


@pytest.mark.parametrize(
    "interrupt, expected",
    [
        pytest.param(Interrupt(2, 1), (2, "epochs 0-1 kept"), id="mid-run"),
        pytest.param(Interrupt(1), (1, "epoch 0 kept"), id="after-epoch-0"),
        pytest.param(Interrupt(0, 2), (0, "no epoch had finished"), id="first-epoch"),
        pytest.param(None, (EPOCHS, f"epochs 0-{EPOCHS - 1} kept; the run had finished"), id="finished"),
    ],
)
def test_resume_reports_where_it_restarts(full_run, tmp_path, interrupt, expected):
    config, full = full_run
    if interrupt is None:
        fit(config, tmp_path / "r")
    else:
        with pytest.raises(KeyboardInterrupt):
            fit(config, tmp_path / "r", callbacks=interrupt)
    callbacks = Interrupt(-1)
    fit(config, tmp_path / "r", resume=True, callbacks=callbacks)
    assert callbacks.resumed == [expected]
    assert callbacks.seen_epochs == list(range(expected[0], EPOCHS))
    assert metrics_without_wall(tmp_path / "r").equals(metrics_without_wall(full))


def test_a_new_run_reports_no_resume(full_run, tmp_path):
    config, _ = full_run
    callbacks = Interrupt(-1)
    fit(config, tmp_path / "r", callbacks=callbacks)
    assert callbacks.resumed == [] and callbacks.seen_epochs == list(range(EPOCHS))


def test_resume_of_a_run_that_stopped_early_trains_nothing_more(full_run, tmp_path, monkeypatch):
    config, _ = full_run
    real, scripted = loop_module.validate, iter([0.5, 0.4, 0.3, 0.2, 0.1])

    def worse_every_epoch(model, valid, config, device):
        return real(model, valid, config, device) | {config.select_metric: next(scripted)}

    monkeypatch.setattr(loop_module, "validate", worse_every_epoch)
    config = quick_config(config.data, epochs=5, patience=1)
    first = fit(config, tmp_path / "r")
    assert first.stopped_early and len(first.history) == 2
    before = metrics_without_wall(tmp_path / "r")
    callbacks = Interrupt(-1)
    again = fit(config, tmp_path / "r", resume=True, callbacks=callbacks)
    assert callbacks.seen_epochs == [] and again.stopped_early
    assert callbacks.resumed == [(2, "epochs 0-1 kept; the run had stopped early")]
    assert (again.best_epoch, again.best_value) == (first.best_epoch, first.best_value)
    assert metrics_without_wall(tmp_path / "r").equals(before)


def test_a_new_run_refuses_a_directory_that_is_not_a_run(full_run, tmp_path):
    config, _ = full_run
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(RecmtlError, match="not empty and has no config.json") as err:
        fit(config, junk)
    assert str(junk) in str(err.value)
    assert [p.name for p in junk.iterdir()] == ["notes.txt"]
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(RecmtlError, match="is a file"):
        fit(config, tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert len(fit(quick_config(config.data, epochs=1), tmp_path / "empty").history) == 1


def test_a_real_ctrl_c_during_the_writes_lets_the_epoch_finish_writing(full_run, tmp_path, monkeypatch):
    """A SIGINT that arrives while the end-of-epoch writes run (polars' native code once swallowed it) is
    held until they are done: the epoch is kept whole, and the interrupt still ends the run."""
    config, _ = full_run
    real_save = loop_module.save_tensors

    def save_tensors(path, tensors, meta):
        if Path(path).name == BEST and meta["epoch"] == 1:
            signal.raise_signal(signal.SIGINT)
        real_save(path, tensors, meta)

    monkeypatch.setattr(loop_module, "save_tensors", save_tensors)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(TrainingInterrupted) as err:
            fit(config, tmp_path / "r")
    finally:
        signal.signal(signal.SIGINT, before)
    assert err.value.last_epoch == 1
    assert load_tensors(tmp_path / "r" / BEST)[1]["epoch"] == 1
    assert pl.read_parquet(tmp_path / "r" / "metrics.parquet").height == 2
    assert leftovers(tmp_path / "r") == []
