"""Top-K ranking metrics with binary relevance, as pure batched functions (EVALUATION.md, RecBole's
definitions).

For a user u with positives R(u) and a ranked list whose rank j (1-based) is a hit when the item at j is
in R(u), with h_j = 1 for a hit and 0 otherwise, n = |R(u)| and c_K = Σ_{j≤K} h_j:

- Recall@K    = c_K / n                                   (not capped at K)
- Precision@K = c_K / K
- Hit@K       = 1 if c_K > 0 else 0
- NDCG@K      = Σ_{j≤K} h_j / log2(j+1)  /  Σ_{j≤min(n,K)} 1 / log2(j+1)
- MRR@K       = 1 / (rank of the first hit) if it is ≤ K else 0
- MAP@K       = Σ_{j≤K} h_j · (c_j / j)  /  min(n, K)

Every metric is a prefix sum over ranks, so all cutoffs come from one ``cumsum`` along the K axis of a
``[U, Kmax]`` hit matrix: no loop over users. Shapes: U users, K cutoff, Kmax the longest cutoff.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

RECALL = "recall"
PRECISION = "precision"
HIT = "hit"
NDCG = "ndcg"
MRR = "mrr"
MAP = "map"

#: Every metric :func:`topk_metrics` computes, in output order.
METRICS: tuple[str, ...] = (RECALL, PRECISION, HIT, NDCG, MRR, MAP)

#: The default cutoffs (EVALUATION.md).
DEFAULT_KS: tuple[int, ...] = (10, 20, 40)


def metric_key(metric: str, k: int) -> str:
    """The result key of ``metric`` at cutoff ``k``, e.g. ``metric_key("ndcg", 20) == "ndcg@20"``."""
    return f"{metric}@{k}"


def normalize_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate cutoffs and return them sorted and de-duplicated; raise ``ValueError`` on a bad one."""
    if isinstance(ks, int | str) or len(ks) == 0:
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"ks must hold positive integers, got {k!r} in {list(ks)!r}")
    return tuple(sorted(set(ks)))


def metric_keys(ks: Sequence[int]) -> list[str]:
    """All result keys for cutoffs ``ks``, metric-major (``recall@10, recall@20, ..., map@40``)."""
    ks = normalize_ks(ks)
    return [metric_key(m, k) for m in METRICS for k in ks]


def topk_metrics(
    hits: Tensor,
    n_pos: Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """Per-user values of every metric in :data:`METRICS` at every cutoff in ``ks``.

    Args:
        hits: bool ``[U, Kmax]``; ``hits[u, j]`` is True when the item ranked ``j + 1`` for user ``u``
            is one of its positives. ``Kmax >= max(ks)``; columns past ``max(ks)`` are ignored.
        n_pos: integer ``[U]``, |R(u)|, the number of positives of each user (``>=`` its hits). A user
            with ``n_pos == 0`` gets 0 for every metric (such users should not be evaluated at all).
        ks: cutoffs K (sorted and de-duplicated).
        dtype: floating dtype of the returned values.

    Returns:
        ``{"recall@K": [U], "precision@K": [U], "hit@K": [U], "ndcg@K": [U], "mrr@K": [U],
        "map@K": [U]}`` for every K, in :func:`metric_keys` order, on ``hits.device``.
    """
    ks = normalize_ks(ks)
    if hits.dtype != torch.bool or hits.dim() != 2:
        raise ValueError(f"hits must be a 2-D bool tensor [U, Kmax], got {hits.dtype} {tuple(hits.shape)}")
    n_users, k_max = hits.shape
    if n_pos.dim() != 1 or n_pos.shape[0] != n_users:
        raise ValueError(f"n_pos must have shape [{n_users}] to match hits, got {tuple(n_pos.shape)}")
    if k_max < ks[-1]:
        raise ValueError(f"hits has {k_max} ranks but the largest cutoff in ks is {ks[-1]}")

    k_max = ks[-1]
    device = hits.device
    h = hits[:, :k_max].to(dtype)  # [U, Kmax]
    n = n_pos.to(device=device, dtype=dtype)  # [U]
    n_safe = n.clamp_min(1.0)
    ranks = torch.arange(1, k_max + 1, device=device, dtype=dtype)  # [Kmax], 1-based
    discount = 1.0 / torch.log2(ranks + 1.0)  # [Kmax]

    n_hits = h.cumsum(dim=1)  # [U, Kmax]: c_j
    dcg = (h * discount).cumsum(dim=1)  # [U, Kmax]
    ideal = discount.cumsum(dim=0)  # [Kmax]: IDCG with j positives
    first = h * (n_hits == 1)  # [U, Kmax]: the first hit only
    rr = (first / ranks).cumsum(dim=1)  # [U, Kmax]
    ap = (h * n_hits / ranks).cumsum(dim=1)  # [U, Kmax]: Σ h_j · Precision@j

    n_long = n_pos.to(device=device, dtype=torch.long)
    out: dict[str, dict[int, Tensor]] = {m: {} for m in METRICS}
    for k in ks:
        c = n_hits[:, k - 1]
        cap = n_long.clamp(1, k)  # min(n, K), 1 for users without positives (their DCG/AP are 0)
        out[RECALL][k] = c / n_safe
        out[PRECISION][k] = c / k
        out[HIT][k] = (c > 0).to(dtype)
        out[NDCG][k] = dcg[:, k - 1] / ideal[cap - 1]
        out[MRR][k] = rr[:, k - 1]
        out[MAP][k] = ap[:, k - 1] / cap.to(dtype)
    return {metric_key(m, k): out[m][k] for m in METRICS for k in ks}
