"""The training loop (recmtl.train.loop.fit) and run evaluation (recmtl.eval.run_eval.evaluate_run):
determinism, resume, config.json, metrics.parquet, early stopping, divergence, evaluation outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import polars as pl
import pytest
import torch

import recmtl
from recmtl.aggregators import PMTRec
from recmtl.data.store import open_dataset, sha256_file
from recmtl.data.tensors import TrainData
from recmtl.errors import RecmtlError
from recmtl.eval.run_eval import evaluate_run
from recmtl.provenance import source_commit
from recmtl.runs import load_tensors, read_run_config, save_tensors, upgrade_train_config
from recmtl.tasks.bpr_tasks import SocialTask
from recmtl.train import loop as loop_module
from recmtl.train.loop import FitResult, TrainingDiverged, fit
from tests.train.conftest import (
    Interrupt,
    assert_same_tensors,
    metrics_without_wall,
    quick_config,
)

METRIC_NAMES = ("recall", "precision", "hit", "ndcg", "mrr", "map")

# --------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_gives_identical_runs_on_cpu(tiny_data, tmp_path):
    config = quick_config(tiny_data, aux=("social", "category"))
    a = fit(config, tmp_path / "a")
    b = fit(config, tmp_path / "b")
    assert isinstance(a, FitResult)
    assert (a.best_epoch, a.best_value) == (b.best_epoch, b.best_value)
    ma, mb = metrics_without_wall(tmp_path / "a"), metrics_without_wall(tmp_path / "b")
    assert ma.height == config.epochs
    assert ma.equals(mb)
    assert_same_tensors(tmp_path / "a" / "best.safetensors", tmp_path / "b" / "best.safetensors")
    assert_same_tensors(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")


def test_different_seed_gives_a_different_run(tiny_data, tmp_path):
    config = quick_config(tiny_data, aux=("social",), epochs=1)
    fit(config, tmp_path / "s0")
    fit(dataclasses.replace(config, seed=1), tmp_path / "s1")
    m0, m1 = metrics_without_wall(tmp_path / "s0"), metrics_without_wall(tmp_path / "s1")
    assert m0["loss_rec"][0] != m1["loss_rec"][0]
    t0, _ = load_tensors(tmp_path / "s0" / "last.safetensors")
    t1, _ = load_tensors(tmp_path / "s1" / "last.safetensors")
    assert not torch.equal(t0["table.user"], t1["table.user"])


# --------------------------------------------------------------------------------------------------
# resume


RESUME_CASES = [
    pytest.param("pmtrec", 2, None, id="pmtrec-between-epochs"),
    pytest.param("pmtrec", 2, 3, id="pmtrec-mid-epoch"),
    pytest.param("ew", 2, None, id="ew-between-epochs"),
    pytest.param("ew", 1, 5, id="ew-mid-epoch"),
]


@pytest.mark.parametrize("method, epoch, step", RESUME_CASES)
def test_resume_reaches_the_uninterrupted_result(tiny_data, tmp_path, method, epoch, step):
    config = quick_config(tiny_data, method=method, aux=("social", "category"), epochs=4)
    fit(config, tmp_path / "full")

    run = tmp_path / "cut"
    interrupt = Interrupt(epoch, step)
    with pytest.raises(KeyboardInterrupt):
        fit(config, run, callbacks=interrupt)
    assert interrupt.seen_epochs == list(range(epoch + 1))
    # whatever the interrupted epoch did is lost: last.safetensors and metrics hold epoch - 1
    _, meta = load_tensors(run / "last.safetensors")
    assert meta["loop"]["epoch"] == epoch - 1
    assert len(meta["loop"]["history"]) == epoch
    assert pl.read_parquet(run / "metrics.parquet").height == epoch

    resumed = Interrupt(-1)
    result = fit(config, run, resume=True, callbacks=resumed)
    assert resumed.seen_epochs == list(range(epoch, config.epochs))  # restarts at the lost epoch
    assert [r["epoch"] for r in result.history] == list(range(config.epochs))
    assert metrics_without_wall(run).equals(metrics_without_wall(tmp_path / "full"))
    assert_same_tensors(run / "last.safetensors", tmp_path / "full" / "last.safetensors")
    assert_same_tensors(run / "best.safetensors", tmp_path / "full" / "best.safetensors")


def test_resume_of_a_run_interrupted_in_its_first_epoch_starts_over(tiny_data, tmp_path):
    """Interrupted before any epoch finished, a run has config.json but no last.safetensors. A new run
    under that name is refused ("use --resume to continue it"), so --resume must work: it has nothing
    to restore and trains from epoch 0, reaching the uninterrupted result."""
    config = quick_config(tiny_data, aux=("social",), epochs=2)
    fit(config, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "r", callbacks=Interrupt(0, 2))
    assert (tmp_path / "r" / "config.json").is_file()
    assert not (tmp_path / "r" / "last.safetensors").exists()
    with pytest.raises(RecmtlError, match="--resume"):
        fit(config, tmp_path / "r")
    fit(config, tmp_path / "r", resume=True)
    assert metrics_without_wall(tmp_path / "r").equals(metrics_without_wall(tmp_path / "full"))
    assert_same_tensors(tmp_path / "r" / "last.safetensors", tmp_path / "full" / "last.safetensors")


def test_resume_of_a_finished_run_trains_nothing_more(tiny_data, tmp_path):
    config = quick_config(tiny_data, epochs=2)
    first = fit(config, tmp_path / "r")
    before = metrics_without_wall(tmp_path / "r")
    callbacks = Interrupt(-1)
    again = fit(config, tmp_path / "r", resume=True, callbacks=callbacks)
    assert callbacks.seen_epochs == []
    assert (again.best_epoch, again.best_value) == (first.best_epoch, first.best_value)
    assert metrics_without_wall(tmp_path / "r").equals(before)


@pytest.mark.parametrize(
    "change, option",
    [({"lr": 0.02}, "lr"), ({"aux": ("social", "category")}, "aux"), ({"seed": 3}, "seed")],
)
def test_resume_with_a_different_config_is_refused(tiny_data, tmp_path, change, option):
    config = quick_config(tiny_data, aux=("social",), epochs=2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "r", callbacks=Interrupt(1))
    last = (tmp_path / "r" / "last.safetensors").read_bytes()
    with pytest.raises(RecmtlError) as err:
        fit(dataclasses.replace(config, **change), tmp_path / "r", resume=True)
    message = str(err.value)
    assert "\n" not in message
    assert f"option --{option} is " in message
    assert (tmp_path / "r" / "last.safetensors").read_bytes() == last  # nothing was touched


def test_resume_on_changed_data_is_refused(tiny_data, tmp_path):
    config = quick_config(tiny_data, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "r", callbacks=Interrupt(1))
    # the same path now holds a (validly prepared) different dataset
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    saved["config"]["data"] = str(data)
    saved["data"]["path"] = str(data)
    (tmp_path / "r" / "config.json").write_text(json.dumps(saved))
    manifest = json.loads((data / "manifest.json").read_text())
    frame = pl.read_parquet(data / "valid.parquet").head(-1)
    frame.write_parquet(data / "valid.parquet")
    manifest["tables"]["valid"] = sha256_file(data / "valid.parquet")
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecmtlError, match="differs from the run's data"):
        fit(dataclasses.replace(config, data=data), tmp_path / "r", resume=True)


def test_new_run_into_an_existing_run_directory_is_refused(tiny_data, tmp_path):
    config = quick_config(tiny_data, epochs=1)
    fit(config, tmp_path / "r")
    last = (tmp_path / "r" / "last.safetensors").read_bytes()
    with pytest.raises(RecmtlError, match="exists"):
        fit(config, tmp_path / "r")
    assert (tmp_path / "r" / "last.safetensors").read_bytes() == last


# --------------------------------------------------------------------------------------------------
# config.json and metrics.parquet


def test_config_json_records_options_data_hash_versions_device(tiny_data, tmp_path):
    config = quick_config(tiny_data, aux=("social", "category"), epochs=1, method=PMTRec(alpha=1.3, tau=0.5))
    fit(config, tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(config)}
    assert set(saved["config"]) == fields
    assert saved["config"]["aux"] == ["social", "category"]
    assert saved["config"]["method"] == {
        "name": "pmtrec",
        "alpha": 1.3,
        "tau": 0.5,
        "combine": "raw",
        "focus": "norm",
        "balance": "softmax",
        "main_task": 0,
        "norm_source": "step",
        "beta": 0.9,
    }
    assert saved["method"] == {"name": "pmtrec", "mode": "row", "variant": "paper"}
    assert saved["config"]["dim"] == 16 and saved["config"]["batch_size"] == 256
    assert saved["config"]["data"] == str(tiny_data)
    assert saved["data"]["hash"] == open_dataset(tiny_data).data_hash
    assert saved["versions"]["torch"] == torch.__version__
    assert saved["versions"]["recmtl"] == recmtl.__version__
    assert saved["versions"]["recmtl_commit"] == source_commit()
    assert saved["device"] == "cpu"


def test_metrics_parquet_pmtrec_columns_and_weights(tiny_data, tmp_path):
    config = quick_config(tiny_data, aux=("social", "category"))
    result = fit(config, tmp_path / "r")
    frame = pl.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert frame["epoch"].to_list() == [0, 1, 2]
    for task in ("rec", "social", "category"):
        assert frame[f"loss_{task}"].is_finite().all()
        weights = frame[f"weight_{task}"]
        assert ((weights > 0) & (weights <= 1)).all(), (task, weights.to_list())
    for name in METRIC_NAMES:
        for k in config.ks:
            values = frame[f"valid_{name}@{k}"]
            assert ((values >= 0) & (values <= 1)).all()
    assert (frame["wall_s"] >= 0).all()
    assert frame["best"].dtype == pl.Boolean
    assert frame["best"][0]  # the first evaluation is always a new best
    # NaN-aware: a user-activity group a task never touched has no mean weight
    assert frame.drop("wall_s").equals(pl.DataFrame(result.history).drop("wall_s"))


def test_pmtrec_focusing_shows_in_the_logged_main_weight(tiny_data, tmp_path):
    # alpha = 10 multiplies the main norm by 10 per epoch: the mean softmax weight of rec must grow
    fit(quick_config(tiny_data, aux=("social", "category"), method=PMTRec(alpha=10.0)), tmp_path / "r")
    weights = pl.read_parquet(tmp_path / "r" / "metrics.parquet")["weight_rec"].to_list()
    assert weights[0] < weights[1] < weights[2]


@pytest.mark.parametrize("method", ["ew", "single"])
def test_metrics_parquet_fixed_weight_methods(tiny_data, tmp_path, method):
    fit(quick_config(tiny_data, method=method, aux=("social", "category"), epochs=2), tmp_path / "r")
    frame = pl.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert (frame["weight_rec"] == 1.0).all()
    if method == "ew":
        assert (frame["weight_social"] == 1.0).all() and (frame["weight_category"] == 1.0).all()
        assert (frame["loss_social"] > 0).all()
    else:  # single never samples the auxiliary tasks: no loss or weight to report (NaN)
        for task in ("social", "category"):
            assert frame[f"loss_{task}"].is_nan().all() and frame[f"weight_{task}"].is_nan().all()
    assert (frame["loss_rec"] > 0).all()


def test_eval_every_leaves_unevaluated_epochs_empty(tiny_data, tmp_path):
    fit(quick_config(tiny_data, epochs=5, eval_every=2), tmp_path / "r")
    frame = pl.read_parquet(tmp_path / "r" / "metrics.parquet")
    evaluated = frame.filter(pl.col("valid_ndcg@20").is_not_null())["epoch"].to_list()
    assert evaluated == [1, 3, 4]  # every 2nd epoch, and always the last one


# --------------------------------------------------------------------------------------------------
# early stopping and model selection


class ScriptedRanking:
    """Replaces loop.rank_users: real metrics, but the selection metric follows ``values``."""

    def __init__(self, real, values):
        self.real, self.values, self.calls = real, list(values), 0

    def __call__(self, *args, **kwargs):
        result = self.real(*args, **kwargs)
        value = self.values[self.calls]
        self.calls += 1
        mean = result.mean() | {"ndcg@20": value}

        class Scripted:
            def mean(self):
                return mean

        return Scripted()


def test_early_stopping_follows_patience_and_keeps_the_best(tiny_data, tmp_path, monkeypatch):
    scripted = ScriptedRanking(loop_module.rank_users, [0.1, 0.3, 0.2, 0.25, 0.9, 0.9, 0.9, 0.9])
    monkeypatch.setattr(loop_module, "rank_users", scripted)
    result = fit(quick_config(tiny_data, epochs=8, patience=2), tmp_path / "r")
    assert result.stopped_early
    assert len(result.history) == 4  # 2 evaluations without improvement after epoch 1
    assert (result.best_epoch, result.best_value) == (1, 0.3)
    frame = pl.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert frame["best"].to_list() == [True, True, False, False]
    _, meta = load_tensors(tmp_path / "r" / "best.safetensors")
    assert meta["epoch"] == 1 and meta["value"] == 0.3 and meta["metric"] == "ndcg@20"


def test_resume_keeps_the_early_stopping_state(tiny_data, tmp_path, monkeypatch):
    values = {0: 0.1, 1: 0.3, 2: 0.2, 3: 0.25, 4: 0.9, 5: 0.9}
    now = {"epoch": -1}
    real = loop_module.rank_users

    def by_epoch(*args, **kwargs):
        return ScriptedRanking(real, [values[now["epoch"]]])(*args, **kwargs)

    class Track(Interrupt):
        def on_epoch_start(self, epoch, n_steps):
            now["epoch"] = epoch
            super().on_epoch_start(epoch, n_steps)

    monkeypatch.setattr(loop_module, "rank_users", by_epoch)
    config = quick_config(tiny_data, epochs=6, patience=2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "r", callbacks=Track(3))  # after one evaluation without improvement
    result = fit(config, tmp_path / "r", resume=True, callbacks=Track(-1))
    assert result.stopped_early and len(result.history) == 4
    assert (result.best_epoch, result.best_value) == (1, 0.3)


def test_no_early_stop_when_the_metric_keeps_improving(tiny_data, tmp_path, monkeypatch):
    scripted = ScriptedRanking(loop_module.rank_users, [0.1, 0.2, 0.3])
    monkeypatch.setattr(loop_module, "rank_users", scripted)
    result = fit(quick_config(tiny_data, epochs=3, patience=1), tmp_path / "r")
    assert not result.stopped_early and len(result.history) == 3 and result.best_epoch == 2


def test_early_stopping_on_a_real_overfitting_run(tiny_data, tmp_path):
    config = quick_config(tiny_data, aux=("social",), method="ew", epochs=30, patience=1, lr=0.05)
    result = fit(config, tmp_path / "r")
    assert result.stopped_early
    assert len(result.history) < config.epochs
    values = [r["valid_ndcg@20"] for r in result.history]
    assert result.best_epoch == values.index(max(values))  # best = argmax (first) of the valid metric
    assert result.best_value == max(values)
    assert values[-1] <= result.best_value
    assert len(values) - 1 - result.best_epoch == config.patience
    _, meta = load_tensors(tmp_path / "r" / "best.safetensors")
    assert meta["epoch"] == result.best_epoch


# --------------------------------------------------------------------------------------------------
# divergence


def test_nan_loss_raises_training_diverged_and_keeps_the_last_good_epoch(tiny_data, tmp_path, monkeypatch):
    original = SocialTask.loss
    epoch_now = {"epoch": 0}

    def nan_from_epoch_1(self, rows, batch, private):
        loss = original(self, rows, batch, private)
        return loss * math.nan if epoch_now["epoch"] >= 1 else loss

    monkeypatch.setattr(SocialTask, "loss", nan_from_epoch_1)

    class Track(Interrupt):
        def on_epoch_start(self, epoch, n_steps):
            epoch_now["epoch"] = epoch

    config = quick_config(tiny_data, aux=("social", "category"), epochs=3)
    with pytest.raises(TrainingDiverged) as err:
        fit(config, tmp_path / "r", callbacks=Track(-1))
    message = str(err.value)
    assert isinstance(err.value, RecmtlError)
    assert "social" in message and "epoch 1" in message and "\n" not in message
    assert "category" not in message
    tensors, meta = load_tensors(tmp_path / "r" / "last.safetensors")
    assert meta["loop"]["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert pl.read_parquet(tmp_path / "r" / "metrics.parquet").height == 1


def test_nan_in_the_first_epoch_writes_no_checkpoint(tiny_data, tmp_path, monkeypatch):
    original = SocialTask.loss
    monkeypatch.setattr(SocialTask, "loss", lambda self, r, b, p: original(self, r, b, p) * math.inf)
    with pytest.raises(TrainingDiverged, match="social.*epoch 0"):
        fit(quick_config(tiny_data, aux=("social",)), tmp_path / "r")
    assert not (tmp_path / "r" / "last.safetensors").exists()
    assert not (tmp_path / "r" / "best.safetensors").exists()


# --------------------------------------------------------------------------------------------------
# failures before training


def test_missing_auxiliary_table_fails_before_any_training(social_only_data, tmp_path):
    with pytest.raises(RecmtlError, match="item_category"):
        fit(quick_config(social_only_data, aux=("category",)), tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "change, option",
    [
        ({"method": {"name": "pmtrec", "alpha": 0.5}}, "pmtrec: alpha must be in [1, 10]"),
        ({"method": {"alpha": 11.0}}, "pmtrec: alpha"),
        ({"method": {"name": "pmtrec", "tau": 0.0}}, "pmtrec: tau must be in (0, 100]"),
        ({"method": {"tau": -1.0}}, "pmtrec: tau"),
        ({"method": {"name": "ew", "tau": 5}}, "method: method ew has no option 'tau'"),
        ({"method": "pmtrek"}, "method: method pmtrek: unknown method"),
        ({"mode": "rows"}, "--mode rows"),
        ({"aux": ("bogus",)}, "--aux"),
        ({"select_metric": "ndcg@5"}, "--select-metric"),
    ],
)
def test_invalid_options_fail_before_any_training(tiny_data, tmp_path, change, option):
    with pytest.raises(RecmtlError) as err:
        fit(quick_config(tiny_data, **change), tmp_path / "r")
    assert str(err.value).startswith(option)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------------
# evaluation of a run


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "pmtrec"
    result = fit(quick_config(tiny_data, aux=("social", "category"), epochs=3, lr=0.02), run)
    return run, result


def reference_per_user(user_emb, item_emb, data: TrainData, split: str, k: int, mask_valid: bool):
    """An independent top-K: per evaluated user (ascending id), recall@k and ndcg@k."""
    scores = user_emb @ item_emb.T
    masked = [data.train] + ([data.valid] if mask_valid else [])
    for pairs in masked:
        scores[pairs.a, pairs.b] = -math.inf
    top = torch.topk(scores, k, dim=1).indices
    target = getattr(data, split)
    positives: dict[int, set[int]] = {}
    for u, i in zip(target.a.tolist(), target.b.tolist(), strict=True):
        positives.setdefault(u, set()).add(i)
    users = sorted(positives)
    recall, ndcg = [], []
    for u in users:
        pos = positives[u]
        hits = [j for j, item in enumerate(top[u].tolist()) if item in pos]
        recall.append(len(hits) / len(pos))
        ideal = sum(1 / math.log2(j + 2) for j in range(min(len(pos), k)))
        ndcg.append(sum(1 / math.log2(j + 2) for j in hits) / ideal)
    return users, top, torch.tensor(recall, dtype=torch.float64), torch.tensor(ndcg, dtype=torch.float64)


def test_evaluate_writes_metrics_json_and_per_user(trained_run, tiny_data):
    run, _ = trained_run
    report, result = evaluate_run(run, split="test", ks=(10, 20, 40), device="cpu")
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["ks"] == [10, 20, 40]
    assert set(saved["metrics"]) == {f"{m}@{k}" for m in METRIC_NAMES for k in (10, 20, 40)}
    assert saved["metrics"] == pytest.approx(report.metrics)
    assert saved["checkpoint"]["sha256"] == sha256_file(run / "best.safetensors")
    _, meta = load_tensors(run / "best.safetensors")
    assert saved["checkpoint"]["epoch"] == meta["epoch"]
    test_users = pl.read_parquet(tiny_data / "test.parquet")["user_id"].unique()
    assert saved["n_users"] == test_users.len()

    per_user = pl.read_parquet(run / "per_user.parquet")
    assert {"user_id", "n_train", "n_pos", "ndcg@20", "recall@10"} <= set(per_user.columns)
    assert per_user["user_id"].to_list() == sorted(test_users.to_list())
    train_counts = dict(pl.read_parquet(tiny_data / "train.parquet").group_by("user_id").len().iter_rows())
    assert per_user["n_train"].to_list() == [train_counts.get(u, 0) for u in per_user["user_id"]]
    for key, value in saved["metrics"].items():
        assert per_user[key].mean() == pytest.approx(value)


def test_evaluation_writes_metrics_json_last(trained_run, tmp_path, monkeypatch):
    """metrics.json marks a run evaluated (a sweep skips the cell): a failure while per_user.parquet is
    written must not leave it behind."""
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    for name in ("metrics.json", "per_user.parquet"):
        (run / name).unlink(missing_ok=True)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", fail)
    with pytest.raises(OSError, match="disk full"):
        evaluate_run(run, split="test", ks=(20,), device="cpu")
    assert not (run / "metrics.json").exists() and not (run / "per_user.parquet").exists()
    monkeypatch.undo()
    evaluate_run(run, split="test", ks=(20,), device="cpu")
    assert (run / "metrics.json").is_file() and (run / "per_user.parquet").is_file()


def test_test_evaluation_masks_train_and_valid_items(trained_run, tiny_data):
    run, _ = trained_run
    evaluate_run(run, split="test", ks=(10, 20, 40), device="cpu")
    tensors, _ = load_tensors(run / "best.safetensors")
    data = TrainData.load(open_dataset(tiny_data), torch.device("cpu"))
    users, top, recall, ndcg = reference_per_user(
        tensors["table.user"], tensors["table.item"], data, "test", 20, mask_valid=True
    )
    seen = set(zip(data.train.a.tolist(), data.train.b.tolist(), strict=True))
    seen |= set(zip(data.valid.a.tolist(), data.valid.b.tolist(), strict=True))
    assert not any((u, i) in seen for u in users for i in top[u].tolist())
    per_user = pl.read_parquet(run / "per_user.parquet")
    assert per_user["user_id"].to_list() == users
    assert torch.allclose(per_user["recall@20"].to_torch().double(), recall)
    assert torch.allclose(per_user["ndcg@20"].to_torch().double(), ndcg)
    # not masking valid items would give other values (so the comparison above can fail)
    _, _, recall_unmasked, _ = reference_per_user(
        tensors["table.user"], tensors["table.item"], data, "test", 20, mask_valid=False
    )
    assert not torch.allclose(recall_unmasked, recall)


def test_valid_evaluation_masks_only_train_and_matches_training_history(trained_run, tiny_data):
    run, result = trained_run
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    report, _ = evaluate_run(run, split="valid", ks=(10, 20, 40), device="cpu", write=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # write=False
    best = result.history[result.best_epoch]
    for key, value in report.metrics.items():
        assert value == pytest.approx(best[f"valid_{key}"], abs=1e-12), key
    tensors, _ = load_tensors(run / "best.safetensors")
    data = TrainData.load(open_dataset(tiny_data), torch.device("cpu"))
    _, _, recall, ndcg = reference_per_user(
        tensors["table.user"], tensors["table.item"], data, "valid", 20, mask_valid=False
    )
    assert report.metrics["recall@20"] == pytest.approx(float(recall.mean()))
    assert report.metrics["ndcg@20"] == pytest.approx(float(ndcg.mean()))


def test_evaluation_masking_on_a_crafted_checkpoint(trained_run, tiny_data, tmp_path):
    """Item vectors = identity; each user scores its train items 10, valid 5, test 3 (+ tiny noise):
    with train + valid masked every test item is ranked first, so recall@40 is 1 for every user with
    at most 40 test items; with only train masked (split valid) the valid items come first."""
    run, _ = trained_run
    crafted = tmp_path / "crafted"
    shutil.copytree(run, crafted)
    data = TrainData.load(open_dataset(tiny_data), torch.device("cpu"))
    users = torch.rand(data.n_users, data.n_items, generator=torch.Generator().manual_seed(0)) * 1e-3
    for pairs, score in ((data.train, 10.0), (data.valid, 5.0), (data.test, 3.0)):
        users[pairs.a, pairs.b] += score
    save_tensors(
        crafted / "best.safetensors",
        {"table.user": users, "table.item": torch.eye(data.n_items)},
        {"epoch": 0, "metric": "ndcg@20", "value": 0.0},
    )
    test_report, _ = evaluate_run(crafted, split="test", ks=(40,), device="cpu", write=False)
    assert test_report.metrics["recall@40"] == pytest.approx(1.0)
    assert test_report.metrics["ndcg@40"] == pytest.approx(1.0)
    valid_report, _ = evaluate_run(crafted, split="valid", ks=(40,), device="cpu", write=False)
    assert valid_report.metrics["recall@40"] == pytest.approx(1.0)
    assert valid_report.metrics["ndcg@40"] == pytest.approx(1.0)


def test_evaluate_refuses_missing_checkpoint_and_non_run_dirs(trained_run, tmp_path):
    run, _ = trained_run
    (tmp_path / "no-ckpt").mkdir()
    (tmp_path / "no-ckpt" / "config.json").write_text((run / "config.json").read_text())
    with pytest.raises(RecmtlError, match="best.safetensors"):
        evaluate_run(tmp_path / "no-ckpt")
    with pytest.raises(RecmtlError, match="config.json"):
        evaluate_run(tmp_path)
    with pytest.raises(RecmtlError, match="not found"):
        evaluate_run(tmp_path / "nowhere")
    (tmp_path / "no-ckpt" / "best.safetensors").write_bytes(b"\x00" * 64)  # a truncated / foreign file
    with pytest.raises(RecmtlError, match=r"best\.safetensors: not a readable recmtl checkpoint"):
        evaluate_run(tmp_path / "no-ckpt")


def test_weights_are_logged_per_user_activity_group(tiny_data, tmp_path):
    from recmtl.data.store import open_dataset
    from recmtl.data.tensors import TrainData
    from recmtl.train.loop import row_groups

    data = TrainData.load(open_dataset(tiny_data), torch.device("cpu"))
    groups = row_groups(data, torch.device("cpu"))
    activity = torch.bincount(data.train.a, minlength=data.n_users)
    user_groups = groups[: data.n_users]
    assert set(groups[data.n_users :].tolist()) == {0}  # item rows
    assert set(user_groups.tolist()) <= {1, 2, 3}
    # groups are ordered by activity: every cold user is at most as active as every heavy user
    assert activity[user_groups == 1].max() <= activity[user_groups == 3].min()
    result = fit(quick_config(tiny_data, aux=("social",), epochs=1), tmp_path / "r")
    record = result.history[0]
    for group in ("cold_users", "mid_users", "heavy_users"):
        assert 0 < record[f"weight_rec@{group}"] <= 1
    assert "weight_rec@items" not in record


def test_a_run_written_by_recmtl_0_1_is_still_read(trained_run, tmp_path):
    """0.1 stored PMTRec's options flat beside the method name; they are read as the [method] table."""
    run, _ = trained_run
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    saved = json.loads((old / "config.json").read_text())
    method = saved["config"].pop("method")
    saved["config"] |= {"method": "pmtrec"} | {k: method[k] for k in ("alpha", "tau", "combine", "focus")}
    (old / "config.json").write_text(json.dumps(saved))
    report, _ = evaluate_run(old, split="valid", write=False)
    expected, _ = evaluate_run(run, split="valid", write=False)
    assert report.metrics == expected.metrics
    # (options 0.1 did not have — main_task, balance, norm_source, beta — are absent from its table: defaults)
    assert read_run_config(old)["config"]["method"] == {
        k: v for k, v in method.items() if k not in ("main_task", "balance", "norm_source", "beta")
    }


def test_upgrading_a_0_1_config_drops_options_of_another_method():
    assert upgrade_train_config({"method": "ew", "alpha": 1.1, "tau": 1.0, "lr": 0.1}) == {
        "method": "ew",
        "lr": 0.1,
    }
    today = {"method": {"name": "pmtrec", "alpha": 1.2}, "lr": 0.1}
    assert upgrade_train_config(today) == today


def test_a_loss_that_explodes_stops_training_and_names_the_learning_rate(tiny_data, tmp_path):
    """--lr 1e9: the losses stay finite for a while but grow by many orders of magnitude."""
    with pytest.raises(TrainingDiverged) as err:
        fit(quick_config(tiny_data, aux=("social",), lr=1e9), tmp_path / "r")
    message = str(err.value)
    assert "exploded" in message and "epoch 0" in message and "lower --lr (now 1e+09)" in message
    assert "\n" not in message
    assert not (tmp_path / "r" / "last.safetensors").exists()


def test_ordinary_training_never_trips_the_divergence_bound(tiny_data, tmp_path):
    """The bound leaves room: the usual learning rates, every task, several epochs."""
    aux = ("social", "category", "coview", "align", "uniform", "rating")
    result = fit(quick_config(tiny_data, aux=aux, lr=0.05, epochs=4), tmp_path / "r")
    assert len(result.history) == 4


def test_validation_is_announced_before_it_runs(tiny_data, tmp_path):
    """The CLI shows "validating" instead of a frozen, full step bar: the loop reports each validation."""
    callbacks = Interrupt(-1)
    fit(quick_config(tiny_data, epochs=5, eval_every=2), tmp_path / "r", callbacks=callbacks)
    assert callbacks.validated == [1, 3, 4]  # every 2nd epoch and the last, as metrics.parquet has them
