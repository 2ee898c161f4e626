"""Every task's loss (recmtl.tasks) against an independent oracle: the formula of METHODS.md §2 written out in
plain Python (math.log / math.exp, explicit loops over the batch) on tiny hand-made batches and gathered rows,
plus hand-stated values and, for the BPR and rating tasks, the gradient w.r.t. the gathered rows (float64)
against hand-derived and finite-difference gradients."""

from __future__ import annotations

import math

import pytest
import torch

from recmtl.data.tensors import Pairs, TrainData
from recmtl.tasks import TASKS, TaskBatch, TaskOptions
from recmtl.tasks.other_tasks import _GramExpSum, uniformity

N_USERS, N_ITEMS, N_CATEGORIES = 5, 8, 3


def pairs(rows: list[tuple[int, int]], value: list[float] | None = None) -> Pairs:
    t = torch.tensor(rows, dtype=torch.long)
    v = None if value is None else torch.tensor(value, dtype=torch.float32)
    return Pairs(t[:, 0].contiguous(), t[:, 1].contiguous(), v)


#: The smallest TrainData every task can be built on (the losses only read rows, batch and private).
DATA = TrainData(
    n_users=N_USERS,
    n_items=N_ITEMS,
    train=pairs([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)], [4.0, 3.0, 5.0, 1.0, 2.0]),
    valid=pairs([(0, 6)]),
    test=pairs([(0, 7)]),
    social=pairs([(0, 1), (1, 2), (2, 3)]),
    item_category=pairs([(0, 0), (1, 1), (2, 2), (3, 0)]),
    n_categories=N_CATEGORIES,
    item_item={"also_viewed": pairs([(0, 1), (1, 2)]), "also_bought": pairs([(2, 3), (3, 4)])},
)

EDGE_TABLE = {"social": "user", "coview": "item", "cobuy": "item"}


def make_task(name: str, batch_size: int = 4, negatives: int = 1):
    return TASKS[name](DATA, TaskOptions(batch_size=batch_size, negatives=negatives))


def rows_of(seed: int, n: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """n small rows with two-decimal values (deterministic), as a fresh leaf."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.7
    return x.round(decimals=2).to(dtype).requires_grad_(True)


def tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rel": 1e-12, "abs": 1e-12} if dtype == torch.float64 else {"rel": 2e-6, "abs": 1e-6}


# --------------------------------------------------------------------------------------------------
# the formulas, in plain Python on lists


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def normalized(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def sq_dist(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def ref_bpr(anchors: list, positives: list, negatives: list) -> float:
    """mean over every (anchor, negative) of −log σ(<a, p> − <a, n>); negatives[b] lists anchor b's."""
    terms = []
    for a, p, negs in zip(anchors, positives, negatives, strict=True):
        for n in negs:
            terms.append(-math.log(sigmoid(dot(a, p) - dot(a, n))))
    return sum(terms) / len(terms)


def ref_rec(users: list, items: list, n_neg: int) -> float:
    """Rec layout: items = [positives (B) | negatives, anchor b's k-th at B + b·N + k]."""
    b = len(users)
    negatives = [[items[b + j * n_neg + k] for k in range(n_neg)] for j in range(b)]
    return ref_bpr(users, items[:b], negatives)


def ref_edge(x: list, b: int, n_neg: int) -> float:
    """Edge layout: x = [src (B) | dst (B) | negatives, src j's k-th at 2B + j·N + k]."""
    negatives = [[x[2 * b + j * n_neg + k] for k in range(n_neg)] for j in range(b)]
    return ref_bpr(x[:b], x[b : 2 * b], negatives)


def ref_category(items: list, weights: list, labels: list[int]) -> float:
    total = 0.0
    for v, c in zip(items, labels, strict=True):
        logits = [dot(v, w) for w in weights]
        total += -logits[c] + math.log(sum(math.exp(z) for z in logits))
    return total / len(items)


def ref_align(users: list, items: list) -> float:
    dists = [sq_dist(normalized(u), normalized(i)) for u, i in zip(users, items, strict=True)]
    return sum(dists) / len(dists)


def ref_uniformity(x: list) -> float:
    x = [normalized(v) for v in x]
    vals = [math.exp(-2 * sq_dist(x[a], x[b])) for a in range(len(x)) for b in range(a + 1, len(x))]
    return math.log(sum(vals) / len(vals))


def ref_rating(users, items, uid, iid, ratings, user_bias, item_bias, mu) -> float:
    total = 0.0
    for u, i, ku, ki, r in zip(users, items, uid, iid, ratings, strict=True):
        pred = dot(u, i) + user_bias[ku] + item_bias[ki] + mu
        total += (pred - r) ** 2
    return total / len(users)


def numeric_grad(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central differences of the plain-Python ``f(list)`` around x (float64)."""
    base = x.detach().to(torch.float64)
    out = torch.zeros_like(base)
    for idx in range(base.numel()):
        plus, minus = base.clone(), base.clone()
        plus.view(-1)[idx] += h
        minus.view(-1)[idx] -= h
        out.view(-1)[idx] = (f(plus.tolist()) - f(minus.tolist())) / (2 * h)
    return out


# --------------------------------------------------------------------------------------------------
# rec


def test_rec_orthogonal_unit_vectors_give_log_2():
    # <u, p> = <u, n> = 0, so −log σ(0) = log 2
    task = make_task("rec")
    users = torch.tensor([[1.0, 0.0, 0.0]])
    items = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    batch = TaskBatch({"user": torch.tensor([0]), "item": torch.tensor([1, 2])})
    loss = task.loss({"user": users, "item": items}, batch, {})
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_rec_hand_case_with_two_negatives():
    # user 0 = (1, 0): pos (1, 0), negs (0, 1), (−1, 0) -> margins 1, 2
    # user 1 = (0, 2): pos (0, 1), negs (0, 1), (1, 0) -> margins 0, 2
    # loss = [log(1 + e^−1) + 2·log(1 + e^−2) + log 2] / 4
    task = make_task("rec", negatives=2)
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    pos = [[1.0, 0.0], [0.0, 1.0]]
    negs = [[0.0, 1.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]  # user 0's two, then user 1's two
    items = torch.tensor(pos + negs, dtype=torch.float64)
    batch = TaskBatch({"user": torch.tensor([0, 1]), "item": torch.arange(6)})
    expected = (math.log(1 + math.exp(-1)) + 2 * math.log(1 + math.exp(-2)) + math.log(2)) / 4
    loss = task.loss({"user": users, "item": items}, batch, {})
    assert loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("negatives", [1, 2, 3])
def test_rec_loss_matches_the_bpr_formula(negatives, dtype):
    b, dim = 3, 4
    task = make_task("rec", negatives=negatives)
    users, items = rows_of(1, b, dim, dtype), rows_of(2, b * (1 + negatives), dim, dtype)
    batch = TaskBatch({"user": torch.arange(b), "item": torch.arange(b * (1 + negatives))})
    loss = task.loss({"user": users, "item": items}, batch, {})
    assert loss.dtype == dtype
    assert loss.item() == pytest.approx(ref_rec(users.tolist(), items.tolist(), negatives), **tol(dtype))


def test_rec_negatives_are_paired_with_their_own_anchor():
    # user 0 = e1 and user 1 = e2; every positive is 0. Anchor 0's negatives are rows 2, 3 (scores 5, 0),
    # anchor 1's rows 4, 5 (scores 0, 0): margins −5, 0, 0, 0. A transposed pairing would give other values.
    task = make_task("rec", negatives=2)
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    items = torch.tensor([[0, 0], [0, 0], [5, 0], [0, 7], [0, 0], [9, 0]], dtype=torch.float64)
    batch = TaskBatch({"user": torch.arange(2), "item": torch.arange(6)})
    loss = task.loss({"user": users, "item": items}, batch, {})
    expected = (math.log(1 + math.exp(5)) + 3 * math.log(2)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_rec_gradient_matches_hand_derived_and_finite_differences():
    # d/dm −log σ(m) = −(1 − σ(m)); m = <a, p> − <a, n>, so per (b, k) term / (B·N):
    # ∂a += −(1 − σ)(p − n), ∂p += −(1 − σ) a, ∂n += (1 − σ) a
    b, n_neg, dim = 3, 2, 4
    task = make_task("rec", negatives=n_neg)
    users, items = rows_of(3, b, dim, torch.float64), rows_of(4, b * (1 + n_neg), dim, torch.float64)
    batch = TaskBatch({"user": torch.arange(b), "item": torch.arange(b * (1 + n_neg))})
    loss = task.loss({"user": users, "item": items}, batch, {})
    g_users, g_items = torch.autograd.grad(loss, [users, items])

    u, it = users.tolist(), items.tolist()
    hand_u = [[0.0] * dim for _ in range(b)]
    hand_i = [[0.0] * dim for _ in range(len(it))]
    scale = 1.0 / (b * n_neg)
    for j in range(b):
        for k in range(n_neg):
            q = b + j * n_neg + k
            c = -(1 - sigmoid(dot(u[j], it[j]) - dot(u[j], it[q]))) * scale
            for d in range(dim):
                hand_u[j][d] += c * (it[j][d] - it[q][d])
                hand_i[j][d] += c * u[j][d]
                hand_i[q][d] -= c * u[j][d]
    assert torch.allclose(g_users, torch.tensor(hand_u, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert torch.allclose(g_items, torch.tensor(hand_i, dtype=torch.float64), rtol=1e-12, atol=1e-14)

    fd_u = numeric_grad(lambda x: ref_rec(x, it, n_neg), users)
    fd_i = numeric_grad(lambda x: ref_rec(u, x, n_neg), items)
    assert torch.allclose(g_users, fd_u, rtol=1e-6, atol=1e-9)
    assert torch.allclose(g_items, fd_i, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# social / coview / cobuy


@pytest.mark.parametrize("name", sorted(EDGE_TABLE))
def test_edge_task_orthogonal_unit_vectors_give_log_2(name):
    # src e1, dst e2, negatives e3 and e2: every score <src, ·> is 0, so every term is log 2
    table = EDGE_TABLE[name]
    task = make_task(name, batch_size=1, negatives=2)
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    batch = TaskBatch({table: torch.arange(4)})
    loss = task.loss({table: x}, batch, {})
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("negatives", [1, 2])
@pytest.mark.parametrize("name", sorted(EDGE_TABLE))
def test_edge_task_loss_matches_the_bpr_formula(name, negatives, dtype):
    b, dim = 3, 4
    table = EDGE_TABLE[name]
    task = make_task(name, batch_size=b, negatives=negatives)
    x = rows_of(5, b * (2 + negatives), dim, dtype)
    batch = TaskBatch({table: torch.arange(x.shape[0])})
    loss = task.loss({table: x}, batch, {})
    assert loss.item() == pytest.approx(ref_edge(x.tolist(), b, negatives), **tol(dtype))


@pytest.mark.parametrize("name", sorted(EDGE_TABLE))
def test_edge_task_gradient_matches_finite_differences(name):
    b, n_neg, dim = 2, 2, 3
    table = EDGE_TABLE[name]
    task = make_task(name, batch_size=b, negatives=n_neg)
    x = rows_of(6, b * (2 + n_neg), dim, torch.float64)
    loss = task.loss({table: x}, TaskBatch({table: torch.arange(x.shape[0])}), {})
    (grad,) = torch.autograd.grad(loss, [x])
    fd = numeric_grad(lambda v: ref_edge(v, b, n_neg), x)
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# category


def test_category_with_zero_weights_is_log_of_the_class_count():
    # all logits 0: softmax is uniform over the 3 categories, cross-entropy log 3 whatever the label
    task = make_task("category")
    items = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    batch = TaskBatch({"item": torch.tensor([0, 1])}, {"label": torch.tensor([2, 0])})
    loss = task.loss({"item": items}, batch, {"W": torch.zeros(N_CATEGORIES, 2)})
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)


def test_category_hand_case():
    # item (1, 0), W rows (2, 0), (0, 5), (0, 0): logits 2, 0, 0; label 0 -> −2 + log(e² + 2)
    task = make_task("category")
    items = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    w = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, 0.0]], dtype=torch.float64)
    batch = TaskBatch({"item": torch.tensor([0])}, {"label": torch.tensor([0])})
    loss = task.loss({"item": items}, batch, {"W": w})
    assert loss.item() == pytest.approx(-2 + math.log(math.exp(2) + 2), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_category_loss_matches_softmax_cross_entropy(dtype):
    task = make_task("category")
    items = rows_of(7, 5, 4, dtype)
    w = rows_of(8, N_CATEGORIES, 4, dtype) * 2
    labels = [2, 0, 1, 1, 2]
    batch = TaskBatch({"item": torch.tensor([3, 0, 1, 1, 2])}, {"label": torch.tensor(labels)})
    loss = task.loss({"item": items}, batch, {"W": w})
    assert loss.item() == pytest.approx(ref_category(items.tolist(), w.tolist(), labels), **tol(dtype))


# --------------------------------------------------------------------------------------------------
# align / uniform


def test_align_hand_case():
    # (3, 4) vs (8, −6) normalise to orthogonal unit vectors: ||ũ − ĩ||² = 2; (1, 1) vs (5, 5): 0. Mean 1.
    task = make_task("align")
    users = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    items = torch.tensor([[8.0, -6.0], [5.0, 5.0]])
    batch = TaskBatch({"user": torch.tensor([0, 1]), "item": torch.tensor([0, 1])})
    loss = task.loss({"user": users, "item": items}, batch, {})
    assert loss.item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_align_loss_matches_the_formula(dtype):
    task = make_task("align")
    users, items = rows_of(9, 4, 3, dtype), rows_of(10, 4, 3, dtype)
    batch = TaskBatch({"user": torch.tensor([0, 1, 1, 2]), "item": torch.tensor([1, 2, 2, 3])})
    loss = task.loss({"user": users, "item": items}, batch, {})
    assert loss.item() == pytest.approx(ref_align(users.tolist(), items.tolist()), **tol(dtype))


def test_uniform_hand_case():
    # users (2, 0), (0, 3): normalised orthogonal, ||x − y||² = 2 -> log exp(−4) = −4
    # items (1, 1), (−2, −2): normalised opposite, ||x − y||² = 4 -> log exp(−8) = −8; (−4 − 8) / 2 = −6
    task = make_task("uniform")
    users = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    items = torch.tensor([[1.0, 1.0], [-2.0, -2.0]], dtype=torch.float64)
    batch = TaskBatch({"user": torch.tensor([0, 1]), "item": torch.tensor([0, 1])})
    loss = task.loss({"user": users, "item": items}, batch, {})
    assert loss.item() == pytest.approx(-6.0, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_loss_matches_the_formula_over_distinct_pairs(dtype):
    task = make_task("uniform")
    users, items = rows_of(11, 4, 3, dtype), rows_of(12, 3, 3, dtype)
    batch = TaskBatch({"user": torch.arange(4), "item": torch.arange(3)})
    loss = task.loss({"user": users, "item": items}, batch, {})
    expected = (ref_uniformity(users.tolist()) + ref_uniformity(items.tolist())) / 2
    assert loss.item() == pytest.approx(expected, **tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniformity_matches_the_pairwise_formula_on_a_larger_batch_with_duplicates(dtype):
    # the Gram-matrix form against the pairwise one, where a whole batch's diagonal is subtracted
    x = rows_of(13, 60, 8, dtype)
    x = torch.cat([x, x[:5]]).detach().requires_grad_(True)  # 5 duplicated rows: pairs at distance 0
    value = uniformity(x)
    assert value.item() == pytest.approx(ref_uniformity(x.tolist()), **tol(dtype))
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(grad).all()


def test_uniformity_gradient_matches_finite_differences():
    x = rows_of(14, 7, 3, torch.float64)
    (grad,) = torch.autograd.grad(uniformity(x), x)
    assert torch.allclose(grad, numeric_grad(ref_uniformity, x), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniformity_gradient_matches_autograd_through_the_plain_expression(dtype):
    # the one-matmul backward against autograd through every pairwise distance, with duplicated rows
    x = rows_of(15, 70, 6, dtype)
    x = torch.cat([x, x[:4]]).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(uniformity(x), x)

    def plain(x: torch.Tensor) -> torch.Tensor:
        unit = torch.nn.functional.normalize(x, dim=-1)
        pairs = torch.triu_indices(len(x), len(x), offset=1)
        sq = (unit[pairs[0]] - unit[pairs[1]]).pow(2).sum(-1)
        return sq.mul(-2).exp().mean().log()

    (expected,) = torch.autograd.grad(plain(x), x)
    assert torch.allclose(grad, expected, **({"atol": 1e-6} if dtype == torch.float32 else {"atol": 1e-12}))


def test_gram_exp_sum_passes_gradcheck():
    x = rows_of(16, 9, 4, torch.float64).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(_GramExpSum.apply, (x,))


@pytest.mark.parametrize("n", [0, 1])
def test_uniformity_without_a_pair_is_zero_and_keeps_the_graph(n):
    x = torch.randn(n, 4, requires_grad=True)
    value = uniformity(x)
    assert value.item() == 0.0
    value.backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros(n, 4))


# --------------------------------------------------------------------------------------------------
# rating


def rating_case(dtype: torch.dtype):
    """Four rows (user 1 and item 2 repeated), biases over the whole tables, μ, ratings."""
    uid, iid = [1, 0, 1, 3], [2, 2, 5, 0]
    users, items = rows_of(13, 4, 3, dtype), rows_of(14, 4, 3, dtype)
    private = {
        "user_bias": torch.tensor([0.1, -0.3, 0.0, 0.25, 0.5], dtype=dtype, requires_grad=True),
        "item_bias": torch.tensor([0.2, 0, -0.4, 0, 0, 0.15, 0, 0], dtype=dtype, requires_grad=True),
        "mu": torch.tensor([3.5], dtype=dtype, requires_grad=True),
    }
    ratings = [4.0, 3.0, 5.0, 1.0]
    extra = {
        "user": torch.tensor(uid),
        "item": torch.tensor(iid),
        "rating": torch.tensor(ratings, dtype=dtype),
    }
    batch = TaskBatch({"user": torch.tensor(uid), "item": torch.tensor(iid)}, extra)
    return users, items, private, batch, (uid, iid, ratings)


def test_rating_hand_case():
    # <(1, 2), (3, −1)> = 1; pred = 1 + 0.5 − 0.25 + 3.5 = 4.75 vs 4 -> 0.5625
    # <(0, 1), (2, 2)> = 2; pred = 2 + 0 + 0 + 3.5 = 5.5 vs 5 -> 0.25; mean 0.40625
    task = make_task("rating")
    users = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    items = torch.tensor([[3.0, -1.0], [2.0, 2.0]])
    private = {
        "user_bias": torch.tensor([0.5, 0.0]),
        "item_bias": torch.tensor([0.0, -0.25]),
        "mu": torch.tensor([3.5]),
    }
    extra = {"user": torch.tensor([0, 1]), "item": torch.tensor([1, 0]), "rating": torch.tensor([4.0, 5.0])}
    batch = TaskBatch({"user": extra["user"], "item": extra["item"]}, extra)
    loss = task.loss({"user": users, "item": items}, batch, private)
    assert loss.item() == pytest.approx(0.40625, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rating_loss_matches_the_mse_formula(dtype):
    task = make_task("rating")
    users, items, private, batch, (uid, iid, ratings) = rating_case(dtype)
    loss = task.loss({"user": users, "item": items}, batch, private)
    expected = ref_rating(
        users.tolist(),
        items.tolist(),
        uid,
        iid,
        ratings,
        private["user_bias"].tolist(),
        private["item_bias"].tolist(),
        private["mu"].item(),
    )
    assert loss.item() == pytest.approx(expected, **tol(dtype))


def test_rating_gradient_matches_hand_derived_and_finite_differences():
    # L = mean_k e_k², e_k = <u_k, i_k> + b_u + b_i + μ − r_k: ∂u_k = 2 e_k i_k / B, ∂i_k = 2 e_k u_k / B,
    # ∂b_u[j] = Σ_{k: user k = j} 2 e_k / B (likewise items), ∂μ = Σ_k 2 e_k / B
    task = make_task("rating")
    users, items, private, batch, (uid, iid, ratings) = rating_case(torch.float64)
    loss = task.loss({"user": users, "item": items}, batch, private)
    g_u, g_i, g_bu, g_bi, g_mu = torch.autograd.grad(
        loss, [users, items, private["user_bias"], private["item_bias"], private["mu"]]
    )
    u, it = users.tolist(), items.tolist()
    bu, bi, mu = private["user_bias"].tolist(), private["item_bias"].tolist(), private["mu"].item()
    n = len(u)
    errors = [dot(u[k], it[k]) + bu[uid[k]] + bi[iid[k]] + mu - ratings[k] for k in range(n)]
    hand_u = [[2 * errors[k] * x / n for x in it[k]] for k in range(n)]
    hand_i = [[2 * errors[k] * x / n for x in u[k]] for k in range(n)]
    hand_bu, hand_bi = [0.0] * N_USERS, [0.0] * N_ITEMS
    for k in range(n):
        hand_bu[uid[k]] += 2 * errors[k] / n
        hand_bi[iid[k]] += 2 * errors[k] / n
    f64 = {"dtype": torch.float64}
    assert torch.allclose(g_u, torch.tensor(hand_u, **f64), rtol=1e-12, atol=1e-14)
    assert torch.allclose(g_i, torch.tensor(hand_i, **f64), rtol=1e-12, atol=1e-14)
    assert torch.allclose(g_bu, torch.tensor(hand_bu, **f64), rtol=1e-12, atol=1e-14)
    assert torch.allclose(g_bi, torch.tensor(hand_bi, **f64), rtol=1e-12, atol=1e-14)
    assert g_mu.item() == pytest.approx(sum(2 * e / n for e in errors), rel=1e-12)
    assert g_bu[1].item() != 0 and g_bu[2].item() == 0  # user 1 appears twice, user 2 never

    fd_u = numeric_grad(lambda x: ref_rating(x, it, uid, iid, ratings, bu, bi, mu), users)
    fd_i = numeric_grad(lambda x: ref_rating(u, x, uid, iid, ratings, bu, bi, mu), items)
    fd_bu = numeric_grad(lambda x: ref_rating(u, it, uid, iid, ratings, x, bi, mu), private["user_bias"])
    assert torch.allclose(g_u, fd_u, rtol=1e-6, atol=1e-9)
    assert torch.allclose(g_i, fd_i, rtol=1e-6, atol=1e-9)
    assert torch.allclose(g_bu, fd_bu, rtol=1e-6, atol=1e-9)
