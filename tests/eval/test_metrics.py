"""topk_metrics: hand-computed cases for every metric at several K, and a property test against a
straightforward per-user loop written from the EVALUATION.md definitions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recmtl.eval.metrics import METRICS, metric_key, metric_keys, normalize_ks, topk_metrics

# Discounts 1/log2(j+1) used below: d1 = 1, d2 = 0.6309297535714575, d3 = 0.5, d4 = 0.43067655807339306,
# d5 = 0.38685280723454163.
#
# Four users, ranks 1..5, cutoffs K = 1, 3, 5:
#   A: hits at ranks 1, 3; |R| = 2           (|R| < K for K = 3, 5)
#   B: hits at ranks 2, 4, 5; |R| = 10       (|R| > K)
#   C: no hit; |R| = 1
#   D: hit at rank 3; |R| = 1
HITS = [
    [1, 0, 1, 0, 0],
    [0, 1, 0, 1, 1],
    [0, 0, 0, 0, 0],
    [0, 0, 1, 0, 0],
]
N_POS = [2, 10, 1, 1]

EXPECTED = {
    # A: 1 hit of 2 -> 1/2; 2 of 2 -> 1.   B: 0/10, 1/10, 3/10.   D: 0, 1, 1.
    "recall@1": [0.5, 0.0, 0.0, 0.0],
    "recall@3": [1.0, 0.1, 0.0, 1.0],
    "recall@5": [1.0, 0.3, 0.0, 1.0],
    # hits / K
    "precision@1": [1.0, 0.0, 0.0, 0.0],
    "precision@3": [2 / 3, 1 / 3, 0.0, 1 / 3],
    "precision@5": [0.4, 0.6, 0.0, 0.2],
    "hit@1": [1.0, 0.0, 0.0, 0.0],
    "hit@3": [1.0, 1.0, 0.0, 1.0],
    "hit@5": [1.0, 1.0, 0.0, 1.0],
    # A@1: d1 / d1 = 1.  A@3, A@5: (d1 + d3) / (d1 + d2) = 1.5 / 1.6309297535714575 = 0.9197207891481876.
    # B@3: d2 / (d1 + d2 + d3) = 0.6309297535714575 / 2.1309297535714575 = 0.2960819109658652.
    # B@5: (d2 + d4 + d5) / (d1 + ... + d5) = 1.4484591188793922 / 2.948459118879392 = 0.4912596920895758.
    # D@3, D@5: d3 / d1 = 0.5.
    "ndcg@1": [1.0, 0.0, 0.0, 0.0],
    "ndcg@3": [0.9197207891481876, 0.2960819109658652, 0.0, 0.5],
    "ndcg@5": [0.9197207891481876, 0.4912596920895758, 0.0, 0.5],
    # first hit: A rank 1, B rank 2, D rank 3.
    "mrr@1": [1.0, 0.0, 0.0, 0.0],
    "mrr@3": [1.0, 0.5, 0.0, 1 / 3],
    "mrr@5": [1.0, 0.5, 0.0, 1 / 3],
    # A@1: P@1 / min(2, 1) = 1.  A@3, A@5: (P@1 + P@3) / min(2, K) = (1 + 2/3) / 2 = 0.8333...
    # B@3: P@2 / 3 = (1/2) / 3 = 1/6.  B@5: (P@2 + P@4 + P@5) / 5 = (1/2 + 2/4 + 3/5) / 5 = 0.32.
    # D@3, D@5: P@3 / min(1, K) = 1/3.
    "map@1": [1.0, 0.0, 0.0, 0.0],
    "map@3": [5 / 6, 1 / 6, 0.0, 1 / 3],
    "map@5": [5 / 6, 0.32, 0.0, 1 / 3],
}


def test_hand_computed_every_metric_every_k() -> None:
    hits = torch.tensor(HITS, dtype=torch.bool)
    out = topk_metrics(hits, torch.tensor(N_POS), ks=(1, 3, 5))
    assert list(out) == metric_keys((1, 3, 5))
    assert set(EXPECTED) == set(out)
    for name, expected in EXPECTED.items():
        assert out[name].dtype == torch.float64
        torch.testing.assert_close(out[name], torch.tensor(expected, dtype=torch.float64), msg=name)


def test_extra_columns_beyond_largest_k_are_ignored() -> None:
    hits = torch.tensor(HITS, dtype=torch.bool)
    wide = torch.cat([hits, torch.ones(4, 3, dtype=torch.bool)], dim=1)
    a = topk_metrics(hits, torch.tensor(N_POS), ks=(3, 5))
    b = topk_metrics(wide, torch.tensor(N_POS), ks=(5, 3))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_float32_output_and_empty_batch() -> None:
    out = topk_metrics(
        torch.tensor(HITS, dtype=torch.bool), torch.tensor(N_POS), ks=(5,), dtype=torch.float32
    )
    assert all(v.dtype == torch.float32 for v in out.values())
    torch.testing.assert_close(out["ndcg@5"], torch.tensor(EXPECTED["ndcg@5"], dtype=torch.float32))
    empty = topk_metrics(torch.zeros(0, 5, dtype=torch.bool), torch.zeros(0, dtype=torch.long), ks=(5,))
    assert all(v.shape == (0,) for v in empty.values())


def test_user_without_positives_scores_zero() -> None:
    out = topk_metrics(torch.zeros(1, 3, dtype=torch.bool), torch.tensor([0]), ks=(3,))
    assert all(float(v[0]) == 0.0 for v in out.values())


@pytest.mark.parametrize(
    ("hits", "n_pos", "ks", "match"),
    [
        (torch.zeros(2, 5, dtype=torch.bool), torch.ones(2, dtype=torch.long), (10,), "largest cutoff"),
        (torch.zeros(2, 5), torch.ones(2, dtype=torch.long), (5,), "bool"),
        (torch.zeros(2, 5, dtype=torch.bool), torch.ones(3, dtype=torch.long), (5,), "n_pos"),
        (torch.zeros(2, 5, dtype=torch.bool), torch.ones(2, dtype=torch.long), (0,), "positive integers"),
        (torch.zeros(2, 5, dtype=torch.bool), torch.ones(2, dtype=torch.long), (), "non-empty"),
    ],
)
def test_invalid_inputs_raise(hits, n_pos, ks, match) -> None:
    with pytest.raises(ValueError, match=match):
        topk_metrics(hits, n_pos, ks)


def test_constants_and_keys() -> None:
    assert METRICS == ("recall", "precision", "hit", "ndcg", "mrr", "map")
    assert metric_key("ndcg", 20) == "ndcg@20"
    assert normalize_ks([40, 10, 20, 10]) == (10, 20, 40)
    assert metric_keys([20, 10])[:3] == ["recall@10", "recall@20", "precision@10"]


# --------------------------------------------------------------------------------------------------
# Independent per-user loop over ranks, straight from the definitions.


def reference_from_hits(hits: list[bool], n_pos: int, k: int) -> dict[str, float]:
    top = hits[:k]
    n_hits = sum(top)
    dcg = sum(1.0 / math.log2(j + 1) for j, h in enumerate(top, start=1) if h)
    idcg = sum(1.0 / math.log2(j + 1) for j in range(1, min(n_pos, k) + 1))
    first = next((j for j, h in enumerate(top, start=1) if h), None)
    ap = 0.0
    seen = 0
    for j, h in enumerate(top, start=1):
        if h:
            seen += 1
            ap += seen / j
    return {
        "recall": n_hits / n_pos,
        "precision": n_hits / k,
        "hit": 1.0 if n_hits else 0.0,
        "ndcg": dcg / idcg,
        "mrr": 1.0 / first if first else 0.0,
        "map": ap / min(n_pos, k),
    }


@st.composite
def hit_matrices(draw):
    k_max = draw(st.integers(1, 12))
    n_users = draw(st.integers(1, 6))
    rows = draw(
        st.lists(st.lists(st.booleans(), min_size=k_max, max_size=k_max), min_size=n_users, max_size=n_users)
    )
    n_pos = [sum(r) + draw(st.integers(0 if any(r) else 1, 15)) for r in rows]
    ks = draw(st.lists(st.integers(1, k_max), min_size=1, max_size=4))
    return rows, n_pos, ks


@settings(max_examples=200, deadline=None)
@given(hit_matrices())
def test_matches_reference_loop(case) -> None:
    rows, n_pos, ks = case
    out = topk_metrics(torch.tensor(rows, dtype=torch.bool), torch.tensor(n_pos), ks)
    for k in set(ks):
        for u, (r, n) in enumerate(zip(rows, n_pos, strict=True)):
            ref = reference_from_hits(r, n, k)
            for metric in METRICS:
                assert float(out[metric_key(metric, k)][u]) == pytest.approx(ref[metric], abs=1e-12)
