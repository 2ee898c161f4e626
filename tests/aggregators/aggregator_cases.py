"""Inputs shared by the aggregator tests: which aggregators the contract covers, and random cases.

(A plain module, imported as ``tests.aggregators.aggregator_cases``; the fixture lives in conftest.py.)
"""

from __future__ import annotations

import torch

from recmtl.aggregators import AGGREGATORS

# Every registered method with its defaults, plus the non-default [reading] options of PMTRec.
CONFIGS: list[tuple[str, dict]] = [(name, {}) for name in AGGREGATORS] + [
    ("pmtrec", {"combine": "raw"}),
    ("pmtrec", {"focus": "logit"}),
    ("pmtrec", {"alpha": 1.5, "tau": 0.1}),
    ("pmtrec", {"alpha": 1.0, "tau": 10.0, "combine": "raw", "focus": "logit"}),
    ("pmtrec", {"balance": "uniform"}),
    ("pmtrec", {"norm_source": "ema"}),
    ("pmtrec", {"norm_source": "ema", "beta": 0.0, "combine": "raw", "focus": "logit"}),
]


def config_id(cfg: tuple[str, dict]) -> str:
    name, params = cfg
    return name + "".join(f"-{k}={v}" for k, v in sorted(params.items()))


# mode -> (R, T, D) of the default random case
SHAPES = {"row": (257, 4, 16), "global": (1, 4, 20_000)}


def random_case(
    mode: str,
    seed: int = 0,
    *,
    shape: tuple[int, int, int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (grads [R, T, D], present [R, T]) with the awkward rows every aggregator must handle.

    Row mode: random masks (main task present with p=0.8, others p=0.5), and, at fixed positions, a row
    with no present task, a main-only row, a row whose present task has a zero gradient, an all-zero row
    and a fully present row. Global mode: one row with task 2 absent. Absent entries hold zeros, as the
    trainer fills them.
    """
    R, T, D = shape or SHAPES[mode]
    gen = torch.Generator().manual_seed(seed)
    # per-task scales spread over three orders of magnitude, as real task gradients are
    scales = torch.logspace(-2, 1, T)[torch.randperm(T, generator=gen)]
    grads = torch.randn(R, T, D, generator=gen, dtype=torch.float64) * scales.view(1, T, 1).double()
    if mode == "global":
        present = torch.ones(R, T, dtype=torch.bool)
        if T > 2:
            present[:, 2] = False
    else:
        probs = torch.full((R, T), 0.5)
        probs[:, 0] = 0.8
        present = torch.bernoulli(probs, generator=gen).bool()
        if R >= 5:
            present[0] = False  # no present task
            present[1] = False
            present[1, 0] = True  # main only
            present[2, :] = True
            grads[2, T - 1] = 0.0  # present task with a zero gradient
            present[3, :] = True
            grads[3] = 0.0  # everything zero
            present[4, :] = True  # all present, all non-zero
    grads = torch.where(present.unsqueeze(-1), grads, torch.zeros_like(grads))
    return grads.to(dtype), present
