"""Benchmark: parameters and epoch time of ``--encoder stem`` against ``--encoder mf``, in one process.

For every method in ``--methods`` and both encoders, on the same data and options: the parameter count
(embedding rows × D, and the dense private parameters: STEM's gates, the category head, ...), the size of
the row storage the trainer keeps (value + two Adam moments), the wall time of ``--epochs`` training
epochs (the steps only, as ``recmtl train`` runs them, without validation), and the time to compute the
main task's user and item vectors for evaluation (STEM mixes the candidates of every row; MF reads its
tables). Encoders alternate within each method, and the epochs of a repeat run in turn, so load from
other processes hits both alike.

    .venv/bin/python benchmarks/bench_stem.py [--data data/ciao] [--aux social,category]
        [--methods ew,pmtrec] [--epochs 1] [--repeats 1] [--threads N]

Prints the machine (device, versions, git sha), one line per (method, encoder), the stem / mf ratios, and
appends the rows to benchmarks/results/stem.csv.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import append_results, print_machine  # noqa: E402

from recmtl.data.store import open_dataset  # noqa: E402
from recmtl.data.tensors import TrainData  # noqa: E402
from recmtl.train.config import TrainConfig  # noqa: E402
from recmtl.train.loop import NoCallbacks, build_training, epoch_seed, run_epoch  # noqa: E402

ENCODERS = ("mf", "stem")


def parameters(model) -> tuple[int, int]:
    """(embedding parameters, dense private parameters) of an encoder."""
    return model.weight.numel(), sum(p.numel() for p in model.private.values())


def epoch_seconds(config: TrainConfig, data: TrainData, epochs: int) -> tuple[float, dict[str, float]]:
    """Wall time of ``epochs`` epochs from a fresh model, and the encoder's figures."""
    device = torch.device(config.device)
    model, plan = build_training(config, data, device)
    state = plan.aggregator.init_state(plan.n_tasks, model.weight.shape[0], config.mode)
    generator = torch.Generator(device=device)
    start = time.perf_counter()
    for epoch in range(epochs):
        generator.manual_seed(epoch_seed(config.seed, epoch))
        record, state = run_epoch(model, plan, data, config, epoch, generator, state, NoCallbacks())
        if "error" in record:
            raise SystemExit(record["error"])
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.user_embeddings(), model.item_embeddings()
    vectors = time.perf_counter() - start
    embedding, private = parameters(model)
    figures = {
        "embedding_params": embedding,
        "private_params": private,
        "row_storage_mb": plan.row_adam.storage.numel() * plan.row_adam.storage.element_size() / 2**20,
        "eval_vectors_s": vectors,
    }
    return seconds, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ciao"))
    parser.add_argument("--aux", default="social,category")
    parser.add_argument("--methods", default="ew,pmtrec")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    info = print_machine()
    dataset = open_dataset(args.data)
    data = TrainData.load(dataset, torch.device(args.device))
    aux = tuple(a for a in args.aux.split(",") if a)
    sizes = f"{data.n_users:,} users, {data.n_items:,} items, {len(data.train):,} train pairs"
    print(f"data {args.data} ({sizes}) · aux {','.join(aux)} · {args.epochs} epoch(s) × {args.repeats} "
          "repeat(s), steps only")  # fmt: skip
    rows = []
    for method in args.methods.split(","):
        times: dict[str, list[float]] = {e: [] for e in ENCODERS}
        figures: dict[str, dict[str, float]] = {}
        for repeat in range(args.repeats):
            order = ENCODERS if repeat % 2 == 0 else ENCODERS[::-1]
            for encoder in order:
                config = TrainConfig(data=args.data, aux=aux, method=method, encoder=encoder, lr=args.lr,
                                     device=args.device).validate()  # fmt: skip
                seconds, figures[encoder] = epoch_seconds(config, data, args.epochs)
                times[encoder].append(seconds / args.epochs)
        for encoder in ENCODERS:
            f = figures[encoder]
            epoch_s = statistics.median(times[encoder])
            total = f["embedding_params"] + f["private_params"]
            print(f"{method:>7} {encoder:>4}: params {total:>11,} (embeddings {f['embedding_params']:,}, "
                  f"dense {f['private_params']:,}) · row storage {f['row_storage_mb']:.0f} MB · "
                  f"epoch {epoch_s:.1f} s · eval vectors {f['eval_vectors_s'] * 1000:.0f} ms")  # fmt: skip
            rows.append({"method": method, "encoder": encoder, "params": total, "epoch_s": f"{epoch_s:.3f}",
                         "epochs": args.epochs, "repeats": args.repeats, "data": args.data.name,
                         "aux": ",".join(aux)} | {k: f"{v:.4g}" for k, v in f.items()})  # fmt: skip
        mf, stem = figures["mf"], figures["stem"]
        ratio_params = (stem["embedding_params"] + stem["private_params"]) / (
            mf["embedding_params"] + mf["private_params"]
        )
        ratio_time = statistics.median(times["stem"]) / statistics.median(times["mf"])
        print(f"{method:>7} stem / mf: params {ratio_params:.2f}× · epoch time {ratio_time:.2f}×")
    path = append_results("stem", rows)
    print(f"appended to {path} ({info['git']})")


if __name__ == "__main__":
    main()
