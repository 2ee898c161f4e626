"""rank_users / rank_scores: hand-computed rankings, agreement with a plain-Python full ranking on random
data, masking, users without positives, chunking invariance; and the CSR helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recmtl.data.csr import CSR
from recmtl.eval.metrics import METRICS, metric_key, metric_keys
from recmtl.eval.ranking import default_users_chunk, rank_scores, rank_users

# --------------------------------------------------------------------------------------------------
# CSR


def test_csr_from_pairs_sorts_and_deduplicates() -> None:
    csr = CSR.from_pairs(torch.tensor([2, 0, 2, 2, 0]), torch.tensor([5, 3, 1, 5, 3]), n_users=4)
    assert csr.indptr.tolist() == [0, 1, 1, 3, 3]
    assert csr.indices.tolist() == [3, 1, 5]
    assert csr.counts().tolist() == [1, 0, 2, 0]
    assert csr.row_ids().tolist() == [0, 2, 2]
    assert (csr.n_rows, csr.nnz) == (4, 3)
    taken = csr.take_rows(torch.tensor([2, 1, 0]))
    assert taken.indptr.tolist() == [0, 2, 2, 3]
    assert taken.indices.tolist() == [1, 5, 3]


def test_csr_empty_and_errors() -> None:
    empty = CSR.from_pairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), n_users=3)
    assert empty.indptr.tolist() == [0, 0, 0, 0] and empty.nnz == 0
    with pytest.raises(ValueError, match="user id 3"):
        CSR.from_pairs(torch.tensor([0, 3]), torch.tensor([0, 0]), n_users=3)
    with pytest.raises(ValueError, match="item ids must be >= 0"):
        CSR.from_pairs(torch.tensor([0]), torch.tensor([-1]), n_users=3)
    with pytest.raises(ValueError, match="integer"):
        CSR.from_pairs(torch.tensor([0.0]), torch.tensor([0]), n_users=3)
    with pytest.raises(ValueError, match="indptr"):
        CSR(torch.tensor([0, 2, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="int64"):
        CSR(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0]))


# --------------------------------------------------------------------------------------------------
# Hand-computed ranking. D = 1, items 0..5 with embeddings 5, 4, 3, 2, 1, 0, so a user with embedding +1
# ranks items 0, 1, 2, 3, 4, 5 and a user with -1 ranks 5, 4, 3, 2, 1, 0. K = 1, 3, 10 (10 > I = 6).
#
#   user 0 (+1): exclude {0}      -> ranking 1 2 3 4 5; positives {2, 4}: hits at ranks 2, 4; |R| = 2
#   user 1 (-1): exclude {}       -> ranking 5 4 3 2 1 0; positives {5}: hit at rank 1; |R| = 1
#   user 2 (+1): no positives     -> not evaluated
#   user 3 (+1): exclude {0}      -> ranking 1 2 3 4 5; positives {0, 3}: 0 is masked, 3 at rank 3; |R| = 2
#   user 4 (+1): exclude {0..4}   -> ranking 5 (then masked items); positives {0, 5}: rank 1; |R| = 2
#
# Discounts d_j = 1/log2(j+1): d1 = 1, d2 = 0.6309297535714575, d3 = 0.5, d4 = 0.43067655807339306.
HAND_USER_EMB = [[1.0], [-1.0], [1.0], [1.0], [1.0]]
HAND_ITEM_EMB = [[5.0], [4.0], [3.0], [2.0], [1.0], [0.0]]
HAND_POSITIVES = [(0, 2), (0, 4), (1, 5), (3, 0), (3, 3), (4, 0), (4, 5)]
HAND_EXCLUDE = [(0, 0), (2, 0), (3, 0), (4, 0), (4, 1), (4, 2), (4, 3), (4, 4)]
HAND_EXPECTED = {  # users 0, 1, 3, 4
    "recall@1": [0.0, 1.0, 0.0, 0.5],
    "recall@3": [0.5, 1.0, 0.5, 0.5],
    "recall@10": [1.0, 1.0, 0.5, 0.5],
    "precision@1": [0.0, 1.0, 0.0, 1.0],
    "precision@3": [1 / 3, 1 / 3, 1 / 3, 1 / 3],
    "precision@10": [0.2, 0.1, 0.1, 0.1],
    "hit@1": [0.0, 1.0, 0.0, 1.0],
    "hit@3": [1.0, 1.0, 1.0, 1.0],
    "hit@10": [1.0, 1.0, 1.0, 1.0],
    # u0@3: d2 / (d1 + d2) = 0.38685280723454163; u0@10: (d2 + d4) / (d1 + d2) = 0.6509209298071326.
    # u3@3, u3@10: d3 / (d1 + d2) = 0.3065735963827292.
    # u4@1: d1 / d1 = 1; u4@3, u4@10: d1 / (d1 + d2) = 0.6131471927654584.
    "ndcg@1": [0.0, 1.0, 0.0, 1.0],
    "ndcg@3": [0.38685280723454163, 1.0, 0.3065735963827292, 0.6131471927654584],
    "ndcg@10": [0.6509209298071326, 1.0, 0.3065735963827292, 0.6131471927654584],
    "mrr@1": [0.0, 1.0, 0.0, 1.0],
    "mrr@3": [0.5, 1.0, 1 / 3, 1.0],
    "mrr@10": [0.5, 1.0, 1 / 3, 1.0],
    # u0@3: P@2 / min(2, 3) = 0.25; u0@10: (P@2 + P@4) / 2 = (1/2 + 2/4) / 2 = 0.5.
    # u3@3, u3@10: P@3 / 2 = 1/6.  u4@1: P@1 / min(2, 1) = 1; u4@3, u4@10: P@1 / 2 = 0.5.
    "map@1": [0.0, 1.0, 0.0, 1.0],
    "map@3": [0.25, 1.0, 1 / 6, 0.5],
    "map@10": [0.5, 1.0, 1 / 6, 0.5],
}


def _csr(pairs: list[tuple[int, int]], n_users: int) -> CSR:
    users, items = zip(*pairs, strict=True) if pairs else ((), ())
    return CSR.from_pairs(
        torch.tensor(users, dtype=torch.long), torch.tensor(items, dtype=torch.long), n_users
    )


@pytest.mark.parametrize("users_chunk", [1, 2, 3, 100])
def test_hand_computed_ranking(users_chunk: int) -> None:
    result = rank_users(
        torch.tensor(HAND_USER_EMB),
        torch.tensor(HAND_ITEM_EMB),
        _csr(HAND_POSITIVES, 5),
        _csr(HAND_EXCLUDE, 5),
        ks=(1, 3, 10),
        users_chunk=users_chunk,
    )
    assert result.user_ids.tolist() == [0, 1, 3, 4]
    assert result.n_pos.tolist() == [2, 1, 2, 2]
    assert result.ks == (1, 3, 10)
    assert list(result.per_user) == metric_keys((1, 3, 10))
    for name, expected in HAND_EXPECTED.items():
        torch.testing.assert_close(
            result.per_user[name], torch.tensor(expected, dtype=torch.float64), msg=name
        )
    means = result.mean()
    assert means["ndcg@10"] == pytest.approx(np.mean(HAND_EXPECTED["ndcg@10"]))


# --------------------------------------------------------------------------------------------------
# Independent reference: per user, sort every non-excluded item by score (Python sorted, sets for
# membership) and apply the EVALUATION.md definitions to the top K.


def reference_rank(
    scores: np.ndarray, positives: dict[int, set[int]], exclude: dict[int, set[int]], ks: list[int]
) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    n_users, n_items = scores.shape
    for u in range(n_users):
        pos = positives.get(u, set())
        if not pos:
            continue
        banned = exclude.get(u, set())
        candidates = [i for i in range(n_items) if i not in banned]
        ranking = sorted(candidates, key=lambda i: -scores[u, i])
        values: dict[str, float] = {}
        for k in ks:
            top = ranking[:k]
            hit_ranks = [j for j, item in enumerate(top, start=1) if item in pos]
            n = len(pos)
            dcg = sum(1.0 / math.log2(j + 1) for j in hit_ranks)
            idcg = sum(1.0 / math.log2(j + 1) for j in range(1, min(n, k) + 1))
            values[f"recall@{k}"] = len(hit_ranks) / n
            values[f"precision@{k}"] = len(hit_ranks) / k
            values[f"hit@{k}"] = 1.0 if hit_ranks else 0.0
            values[f"ndcg@{k}"] = dcg / idcg
            values[f"mrr@{k}"] = 1.0 / hit_ranks[0] if hit_ranks else 0.0
            values[f"map@{k}"] = sum((c + 1) / j for c, j in enumerate(hit_ranks)) / min(n, k)
        out[u] = values
    return out


def random_case(seed: int, n_users: int, n_items: int, dim: int, n_pos: int, n_ex: int):
    rng = np.random.default_rng(seed)
    user_emb = rng.standard_normal((n_users, dim))
    item_emb = rng.standard_normal((n_items, dim))
    pos_pairs = list(
        zip(rng.integers(0, n_users, n_pos).tolist(), rng.integers(0, n_items, n_pos).tolist(), strict=True)
    )
    ex_pairs = list(
        zip(rng.integers(0, n_users, n_ex).tolist(), rng.integers(0, n_items, n_ex).tolist(), strict=True)
    )
    positives: dict[int, set[int]] = {}
    for u, i in pos_pairs:
        positives.setdefault(u, set()).add(i)
    exclude: dict[int, set[int]] = {}
    for u, i in ex_pairs:
        exclude.setdefault(u, set()).add(i)
    return user_emb, item_emb, pos_pairs, ex_pairs, positives, exclude


def assert_matches_reference(result, reference: dict[int, dict[str, float]], ks: list[int]) -> None:
    assert result.user_ids.tolist() == sorted(reference)
    for row, u in enumerate(result.user_ids.tolist()):
        for metric in METRICS:
            for k in ks:
                name = metric_key(metric, k)
                assert float(result.per_user[name][row]) == pytest.approx(reference[u][name], abs=1e-6), (
                    u,
                    name,
                )


@pytest.mark.parametrize(
    ("seed", "n_users", "n_items", "users_chunk"),
    [(0, 23, 57, 7), (1, 23, 57, 23), (2, 40, 30, 9), (3, 17, 200, 1), (4, 31, 45, 64)],
)
def test_matches_reference_on_random_data(seed: int, n_users: int, n_items: int, users_chunk: int) -> None:
    # n_items = 30 < max K = 40 and dense exclusions cover users with fewer than K candidates left.
    ks = [1, 5, 10, 20, 40]
    user_emb, item_emb, pos_pairs, ex_pairs, positives, exclude = random_case(
        seed, n_users, n_items, dim=6, n_pos=3 * n_users, n_ex=n_users * n_items // 3
    )
    result = rank_users(
        torch.from_numpy(user_emb),
        torch.from_numpy(item_emb),
        _csr(pos_pairs, n_users),
        _csr(ex_pairs, n_users),
        ks=ks,
        users_chunk=users_chunk,
    )
    assert_matches_reference(result, reference_rank(user_emb @ item_emb.T, positives, exclude, ks), ks)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_users=st.integers(1, 12),
    n_items=st.integers(1, 15),
    users_chunk=st.integers(1, 13),
    ex_frac=st.floats(0.0, 1.2),
)
def test_property_matches_reference(seed: int, n_users: int, n_items: int, users_chunk: int, ex_frac: float):
    ks = [1, 3, 8]
    user_emb, item_emb, pos_pairs, ex_pairs, positives, exclude = random_case(
        seed, n_users, n_items, dim=3, n_pos=2 * n_users, n_ex=int(ex_frac * n_users * n_items)
    )
    result = rank_users(
        torch.from_numpy(user_emb),
        torch.from_numpy(item_emb),
        _csr(pos_pairs, n_users),
        _csr(ex_pairs, n_users),
        ks=ks,
        users_chunk=users_chunk,
    )
    assert_matches_reference(result, reference_rank(user_emb @ item_emb.T, positives, exclude, ks), ks)


def test_generic_scores_fn_matches_reference() -> None:
    # A scorer that is not a dot product: negative squared Euclidean distance.
    ks = [1, 5, 10]
    user_emb, item_emb, pos_pairs, ex_pairs, positives, exclude = random_case(5, 19, 41, 4, 50, 150)
    users_t, items_t = torch.from_numpy(user_emb), torch.from_numpy(item_emb)

    def scores_fn(users: torch.Tensor) -> torch.Tensor:
        return -(torch.cdist(users_t[users], items_t) ** 2)

    result = rank_scores(scores_fn, 19, 41, _csr(pos_pairs, 19), _csr(ex_pairs, 19), ks, users_chunk=4)
    scores = -((user_emb[:, None, :] - item_emb[None, :, :]) ** 2).sum(-1)
    assert_matches_reference(result, reference_rank(scores, positives, exclude, ks), ks)


# --------------------------------------------------------------------------------------------------
# Masking, users without positives, chunking.


def test_excluded_top_item_never_ranked_and_excluded_positive_never_counts() -> None:
    # Item 0 has by far the highest score for everyone; it is a train item (excluded) for every user and
    # also a test positive of user 0. With it masked, user 0's only other positive (item 9, lowest score)
    # is ranked last of the 9 candidates.
    n_users, n_items = 3, 10
    item_emb = torch.tensor([[100.0]] + [[float(n_items - i)] for i in range(1, n_items)])
    user_emb = torch.ones(n_users, 1)
    positives = _csr([(0, 0), (0, 9), (1, 1), (2, 0)], n_users)
    exclude = _csr([(u, 0) for u in range(n_users)], n_users)
    result = rank_users(user_emb, item_emb, positives, exclude, ks=(1, 8, 9, 20))
    # user 2's only positive is masked: evaluated (it has a positive) but can never hit.
    assert result.user_ids.tolist() == [0, 1, 2]
    assert result.per_user["hit@20"].tolist() == [1.0, 1.0, 0.0]
    assert result.per_user["hit@8"].tolist() == [0.0, 1.0, 0.0]
    assert result.per_user["recall@20"].tolist() == [0.5, 1.0, 0.0]  # item 0 never counts for user 0
    assert result.per_user["mrr@20"].tolist() == [1 / 9, 1.0, 0.0]
    # Without exclusion item 0 is ranked first for everyone.
    unmasked = rank_users(user_emb, item_emb, positives, None, ks=(1,))
    assert unmasked.per_user["hit@1"].tolist() == [1.0, 0.0, 1.0]


def test_users_without_positives_are_excluded() -> None:
    user_emb, item_emb, pos_pairs, ex_pairs, _, _ = random_case(7, 12, 20, 3, 0, 30)
    pos_pairs = [(1, 3), (4, 0), (4, 7), (10, 19)]
    result = rank_users(
        torch.from_numpy(user_emb), torch.from_numpy(item_emb), _csr(pos_pairs, 12), _csr(ex_pairs, 12)
    )
    assert result.user_ids.tolist() == [1, 4, 10]
    assert result.n_pos.tolist() == [1, 2, 1]
    assert all(v.shape == (3,) for v in result.per_user.values())

    nobody = rank_users(torch.from_numpy(user_emb), torch.from_numpy(item_emb), _csr([], 12), None)
    assert nobody.n_users == 0 and list(nobody.per_user) == metric_keys((10, 20, 40))
    assert all(math.isnan(v) for v in nobody.mean().values())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunking_invariance(dtype: torch.dtype) -> None:
    n_users = 29
    user_emb, item_emb, pos_pairs, ex_pairs, _, _ = random_case(11, n_users, 64, 8, 90, 400)
    args = (
        torch.from_numpy(user_emb).to(dtype),
        torch.from_numpy(item_emb).to(dtype),
        _csr(pos_pairs, n_users),
        _csr(ex_pairs, n_users),
    )
    results = [rank_users(*args, ks=(1, 5, 20), users_chunk=c) for c in (1, 7, n_users)]
    for other in results[1:]:
        assert torch.equal(other.user_ids, results[0].user_ids)
        for name, values in results[0].per_user.items():
            assert torch.equal(other.per_user[name], values), name


def test_default_chunk_and_argument_errors() -> None:
    assert default_users_chunk(105_114) == 64 * 2**20 // (105_114 * 4)
    assert default_users_chunk(10**9) == 1
    user_emb, item_emb = torch.randn(4, 2), torch.randn(5, 2)
    positives = _csr([(0, 1)], 4)
    with pytest.raises(ValueError, match="users_chunk"):
        rank_users(user_emb, item_emb, positives, users_chunk=0)
    with pytest.raises(ValueError, match="share D"):
        rank_users(user_emb, torch.randn(5, 3), positives)
    with pytest.raises(ValueError, match="rows"):
        rank_users(user_emb, item_emb, _csr([(0, 1)], 3))
    with pytest.raises(ValueError, match="n_items"):
        rank_users(user_emb, item_emb, _csr([(0, 5)], 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    user_emb, item_emb, pos_pairs, ex_pairs, _, _ = random_case(13, 50, 300, 16, 200, 2000)
    args = (torch.from_numpy(user_emb), torch.from_numpy(item_emb), _csr(pos_pairs, 50), _csr(ex_pairs, 50))
    cpu = rank_users(*args, users_chunk=16)
    gpu = rank_users(*args, users_chunk=16, device="cuda")
    assert torch.equal(cpu.user_ids, gpu.user_ids)
    for name, values in cpu.per_user.items():
        torch.testing.assert_close(gpu.per_user[name], values, msg=name)
