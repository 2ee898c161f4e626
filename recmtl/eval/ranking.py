"""Chunked full ranking over all items (EVALUATION.md "Protocol").

Every user with at least one positive in the evaluated split is ranked against *all* items (no sampled
negatives). Users are processed ``users_chunk`` at a time so that at most ``users_chunk × I`` scores exist
at once; for each chunk:

1. ``scores = scores_fn(users)``, ``[C, I]`` (for :func:`rank_users`: ``user_emb[users] @ item_emb.T``);
2. the user's excluded items (train items when validating, train + valid when testing) are set to
   ``-inf`` with one ``index_fill_`` of the flattened block at the chunk's slice of the exclusion CSR;
3. ``torch.topk(scores, Kmax)``;
4. hits: a top-K item is a hit when the key ``row * I + item`` is found (``torch.searchsorted``) among the
   sorted keys of all positives, and its score is not ``-inf`` (an excluded item never counts, even when
   it is also a positive and fewer than Kmax items are left unmasked);
5. :func:`recmtl.eval.metrics.topk_metrics` on the ``[C, Kmax]`` hit matrix.

Steps 2, 4 and 5 touch O(nnz + C·Kmax) values, against O(C·I·D) for the matmul and O(C·I) for top-K.
The same code runs on CPU and CUDA: all tensors live on ``device``; the only host syncs are in the
one-off preparation before the loop (chunk boundaries come from a host copy of a CSR pointer array).

Ties: scores that are exactly equal are ordered as ``torch.topk`` orders them, which is unspecified and
may differ between devices; scores should be finite (``-inf`` is reserved for masking, NaN is not
handled). Shapes: U users, I items, D embedding dim, C users in a chunk, K cutoff, Kmax = max(ks).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from recmtl.data.csr import CSR
from recmtl.eval.metrics import DEFAULT_KS, metric_keys, normalize_ks, topk_metrics

#: Score block budget used to pick ``users_chunk`` when it is not given: ``users_chunk × I`` scores of
#: the score dtype take at most about this many bytes (at least one user per chunk).
DEFAULT_CHUNK_BYTES = 64 * 2**20

ScoresFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True, eq=False)
class RankingResult:
    """Per-user metrics of one full-ranking evaluation, on the CPU.

    Attributes:
        user_ids: int64 ``[U']``, ascending: the evaluated users (those with at least one positive).
        n_pos: int64 ``[U']``, |R(u)| of each evaluated user.
        per_user: ``{"ndcg@20": float64 [U'], ...}``, every metric at every cutoff, aligned with
            ``user_ids``.
        ks: the cutoffs, sorted.
    """

    user_ids: Tensor
    n_pos: Tensor
    per_user: dict[str, Tensor]
    ks: tuple[int, ...]

    @property
    def n_users(self) -> int:
        """U', the number of evaluated users."""
        return self.user_ids.numel()

    def mean(self) -> dict[str, float]:
        """Each metric averaged over the evaluated users (NaN when there are none)."""
        if self.n_users == 0:
            return {name: math.nan for name in self.per_user}
        return {name: float(v.mean()) for name, v in self.per_user.items()}


def default_users_chunk(n_items: int, element_size: int = 4, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Users per chunk so that a ``[chunk, I]`` score block takes about ``budget_bytes``."""
    return max(1, budget_bytes // max(1, n_items * element_size))


def rank_users(
    user_emb: Tensor,
    item_emb: Tensor,
    positives: CSR,
    exclude: CSR | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    users_chunk: int | None = None,
    device: torch.device | str | None = None,
) -> RankingResult:
    """Full-ranking top-K metrics for dot-product scores ``user_emb @ item_emb.T``.

    Args:
        user_emb: ``[U, D]`` user embeddings.
        item_emb: ``[I, D]`` item embeddings (same dtype as ``user_emb``).
        positives: CSR over U users of the evaluated split's items; users without any are skipped.
        exclude: CSR over U users of items masked before the top-K (``None``: mask nothing).
        ks: cutoffs K.
        users_chunk: users scored at a time (``None``: :func:`default_users_chunk`).
        device: where the scoring runs (``None``: ``user_emb.device``). Inputs are moved there.

    Returns:
        A :class:`RankingResult` (on the CPU).
    """
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(
            f"user_emb [U, D] and item_emb [I, D] must share D, got {tuple(user_emb.shape)} "
            f"and {tuple(item_emb.shape)}"
        )
    if user_emb.dtype != item_emb.dtype:
        raise ValueError(f"user_emb is {user_emb.dtype} but item_emb is {item_emb.dtype}")
    device = torch.device(device) if device is not None else user_emb.device
    users_on = user_emb.detach().to(device)
    items_t = item_emb.detach().to(device).T  # [D, I]

    def scores_fn(users: Tensor) -> Tensor:
        return users_on[users] @ items_t

    if users_chunk is None:
        users_chunk = default_users_chunk(item_emb.shape[0], user_emb.element_size())
    return rank_scores(
        scores_fn,
        n_users=user_emb.shape[0],
        n_items=item_emb.shape[0],
        positives=positives,
        exclude=exclude,
        ks=ks,
        users_chunk=users_chunk,
        device=device,
    )


@torch.no_grad()
def rank_scores(
    scores_fn: ScoresFn,
    n_users: int,
    n_items: int,
    positives: CSR,
    exclude: CSR | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    users_chunk: int | None = None,
    device: torch.device | str = "cpu",
) -> RankingResult:
    """Full-ranking top-K metrics for any scorer (the general form of :func:`rank_users`).

    Args:
        scores_fn: maps int64 user ids ``[C]`` (on ``device``) to a fresh floating ``[C, I]`` score
            tensor on ``device``; it is masked in place, so it must not return a view of cached data.
        n_users: U, the number of rows of ``positives`` and ``exclude``.
        n_items: I, the number of items (columns of the score block).
        positives, exclude, ks: as in :func:`rank_users`.
        users_chunk: users scored at a time (``None``: :func:`default_users_chunk` for float32).
        device: where the scoring runs.

    Returns:
        A :class:`RankingResult` (on the CPU).
    """
    ks = normalize_ks(ks)
    device = torch.device(device)
    if users_chunk is None:
        users_chunk = default_users_chunk(n_items)
    try:
        chunk = operator.index(users_chunk)
    except TypeError:
        chunk = 0
    if isinstance(users_chunk, bool) or chunk < 1:
        raise ValueError(f"users_chunk must be a positive integer, got {users_chunk!r}")
    users_chunk = chunk
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    for name, csr in (("positives", positives), ("exclude", exclude)):
        if csr is None:
            continue
        if csr.n_rows != n_users:
            raise ValueError(f"{name} has {csr.n_rows} rows but there are {n_users} users")
        if csr.nnz and int(csr.indices.max()) >= n_items:
            raise ValueError(f"{name} holds item id {int(csr.indices.max())} >= n_items={n_items}")

    # One-off preparation: restrict both CSRs to the evaluated users (rows 0..U'-1 from here on).
    positives = positives.to(device)
    n_pos_all = positives.counts()
    user_ids = torch.nonzero(n_pos_all > 0).flatten()  # [U']
    n_pos = n_pos_all[user_ids]  # [U']
    pos = positives.take_rows(user_ids)
    pos_keys = torch.sort(pos.row_ids() * n_items + pos.indices).values  # [nnz_pos], sorted
    if exclude is not None:
        ex = exclude.to(device).take_rows(user_ids)
        ex_flat = ex.row_ids() * n_items + ex.indices  # [nnz_ex]: row * I + item, rows in 0..U'-1
        ex_ptr = ex.indptr.cpu().tolist()  # host copy: chunk slices without syncs in the loop

    n_eval = user_ids.numel()
    k_max = ks[-1]
    k_top = min(k_max, n_items)
    chunks: list[dict[str, Tensor]] = []
    for start in range(0, n_eval, users_chunk):
        stop = min(start + users_chunk, n_eval)
        scores = scores_fn(user_ids[start:stop])  # [C, I]
        if scores.shape != (stop - start, n_items) or not scores.is_floating_point():
            raise ValueError(
                f"scores_fn must return a floating [{stop - start}, {n_items}] tensor, "
                f"got {scores.dtype} {tuple(scores.shape)}"
            )
        if exclude is not None:
            # index_fill_ on the flat view: far cheaper than a 2-D index_put_ on CPU.
            scores = scores.contiguous()
            lo, hi = ex_ptr[start], ex_ptr[stop]
            scores.view(-1).index_fill_(0, ex_flat[lo:hi] - start * n_items, -math.inf)
        values, top = torch.topk(scores, k_top, dim=1)  # [C, k_top]
        del scores
        rows = torch.arange(start, stop, device=device).unsqueeze(1)  # [C, 1], rows in 0..U'-1
        query = rows * n_items + top  # [C, k_top]
        found = torch.searchsorted(pos_keys, query).clamp_max(pos_keys.numel() - 1)
        hits = (pos_keys[found] == query) & (values != -math.inf)  # [C, k_top]
        if k_top < k_max:  # fewer items than the largest cutoff: the missing ranks are misses
            hits = torch.cat([hits, hits.new_zeros(stop - start, k_max - k_top)], dim=1)
        chunks.append(topk_metrics(hits, n_pos[start:stop], ks))

    if chunks:
        per_user = {name: torch.cat([c[name] for c in chunks]).cpu() for name in chunks[0]}
    else:
        per_user = {name: torch.zeros(0, dtype=torch.float64) for name in metric_keys(ks)}
    return RankingResult(user_ids=user_ids.cpu(), n_pos=n_pos.cpu(), per_user=per_user, ks=ks)
