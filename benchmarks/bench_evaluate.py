"""Benchmark: full-ranking evaluation (`rank_users`) against the bare chunked score matmul + top-K.

Ciao-shaped random inputs (7,375 users, 105,114 items, d=64, seed 0; ~28k positive pairs, ~230k
excluded pairs). Both timings rank the same users with the same chunking, so the ratio is the cost of
masking, hit lookup and metrics on top of the unavoidable ``[chunk, I]`` matmul and ``torch.topk``.
Target: ratio <= 2 on a 2-core CPU.

    .venv/bin/python benchmarks/bench_evaluate.py [--repeats 5] [--users-chunk N] [--device cpu]

Runs are interleaved (bare, full, bare, full, ...) after one warm-up each, so that load from other
processes hits both alike. Prints medians, the ratio of medians and of minima, device, torch version,
thread count, CPU model and git sha, and appends one row to benchmarks/results/evaluate.csv.
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

from recmtl.data.csr import CSR
from recmtl.eval.metrics import DEFAULT_KS  # noqa: E402
from recmtl.eval.ranking import default_users_chunk, rank_users  # noqa: E402

N_USERS, N_ITEMS, DIM = 7_375, 105_114, 64
N_POSITIVE, N_EXCLUDE = 28_000, 230_000


def make_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, CSR, CSR]:
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.randn(N_USERS, DIM, generator=gen) / DIM**0.5
    item_emb = torch.randn(N_ITEMS, DIM, generator=gen) / DIM**0.5
    pos_u = torch.randint(N_USERS, (N_POSITIVE,), generator=gen)
    pos_i = torch.randint(N_ITEMS, (N_POSITIVE,), generator=gen)
    ex_u = torch.randint(N_USERS, (N_EXCLUDE,), generator=gen)
    ex_i = torch.randint(N_ITEMS, (N_EXCLUDE,), generator=gen)
    return user_emb, item_emb, CSR.from_pairs(pos_u, pos_i, N_USERS), CSR.from_pairs(ex_u, ex_i, N_USERS)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def bare(user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor, chunk: int, k: int) -> None:
    """The floor: score matmul + top-K over the same users and chunks, nothing else."""
    items_t = item_emb.T
    for start in range(0, users.numel(), chunk):
        scores = user_emb[users[start : start + chunk]] @ items_t
        torch.topk(scores, k, dim=1)


def interleaved_medians(fns: list, device: torch.device, repeats: int) -> list[list[float]]:
    """Run each function once to warm up, then ``repeats`` rounds of all of them in turn (so that load from
    other processes hits every candidate alike); return the per-function run times."""
    for fn in fns:
        fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--users-chunk", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print_machine()
    device = torch.device(args.device)
    user_emb, item_emb, positives, exclude = make_inputs(seed=0)
    user_emb, item_emb = user_emb.to(device), item_emb.to(device)
    chunk = args.users_chunk or default_users_chunk(N_ITEMS, user_emb.element_size())
    ks = DEFAULT_KS
    users = torch.nonzero(positives.counts() > 0).flatten().to(device)

    bare_times, full_times = interleaved_medians(
        [
            lambda: bare(user_emb, item_emb, users, chunk, max(ks)),
            lambda: rank_users(user_emb, item_emb, positives, exclude, ks, users_chunk=chunk, device=device),
        ],
        device,
        args.repeats,
    )
    t_bare, t_full = statistics.median(bare_times), statistics.median(full_times)
    result = rank_users(user_emb, item_emb, positives, exclude, ks, users_chunk=chunk, device=device)
    ratio = t_full / t_bare

    row = {
        "device": device.type,
        "users": N_USERS,
        "evaluated_users": result.n_users,
        "items": N_ITEMS,
        "dim": DIM,
        "positives": positives.nnz,
        "excluded": exclude.nnz,
        "ks": ",".join(map(str, ks)),
        "users_chunk": chunk,
        "repeats": args.repeats,
        "bare_s": round(t_bare, 4),
        "rank_users_s": round(t_full, 4),
        "ratio": round(ratio, 3),
        "ratio_min": round(min(full_times) / min(bare_times), 3),
    }
    for key, value in row.items():
        print(f"{key:>16}: {value}")
    print(f"{'bare runs':>16}: {', '.join(f'{t:.3f}' for t in bare_times)}")
    print(f"{'full runs':>16}: {', '.join(f'{t:.3f}' for t in full_times)}")
    print(f"{'ndcg@20 (mean)':>16}: {result.mean()['ndcg@20']:.6f}")
    print(f"appended to {append_results('evaluate', [row])}")


if __name__ == "__main__":
    main()
