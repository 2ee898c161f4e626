"""The non-BPR tasks (METHODS.md §2).

category: (i, c) from item_category; softmax cross-entropy over V_i Wᵀ with W [C, D] task-private. Items are
sampled uniformly among labelled items and a multi-label item contributes one of its labels per step.
align / uniform: DirectAU (Wang et al., KDD 2022) on the rec batch's (u, i+): alignment
mean ||Ũ_u − Ṽ_i||², uniformity (log mean exp(−2||x−y||²) over users + over items) / 2, on L2-normalised rows.
rating: (u, i, r) over training rows with a rating; MSE of s(u, i) + b_u + b_i + μ (biases task-private).

Sampling (``TaskOptions.sampling``, see :mod:`recmtl.tasks.base`): with ``aligned``, category takes the
anchored rec positive items (one of each item's labels, uniformly; a uniform labelled item for an unlabelled
one) and rating the anchored rec pairs with their training rating (a uniform rated training row for a pair
without one). align / uniform always use the rec batch itself, so the option does not change them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recmtl.data.tensors import TrainData
from recmtl.errors import RecmtlError
from recmtl.tasks.base import OutEdges, Task, TaskBatch, TaskOptions, anchor_positions, uniform_indices


class CategoryTask(Task):
    name = "category"
    tables = ("item",)

    def __init__(self, data: TrainData, options: TaskOptions) -> None:
        if data.item_category is None or len(data.item_category) == 0:
            raise RecmtlError(
                "--aux category: the dataset has no item_category table (item_category.parquet)"
            )
        super().__init__(data, options)
        order = torch.argsort(data.item_category.a, stable=True)
        items, labels = data.item_category.a[order], data.item_category.b[order]
        self.items, counts = torch.unique_consecutive(items, return_counts=True)
        self.counts = counts
        self.offsets = torch.cumsum(counts, 0) - counts
        self.labels = labels
        self.out_edges = None
        if options.aligned:
            self.out_edges = OutEdges(data.item_category.a, data.item_category.b, data.n_items)

    def init_private(self, dim: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {"W": torch.randn(self.data.n_categories, dim, generator=generator) * self.options.init_std}

    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        device = self.items.device
        size = self.options.batch_size
        if self.out_edges is not None:  # aligned: the anchored rec items, each with one of its labels
            anchors = rec_items[anchor_positions(generator, rec_items.numel(), size, device)]
            has, anchor_label = self.out_edges.pick(generator, anchors)
        pick = uniform_indices(generator, self.items.numel(), size, device)
        within = (torch.rand(pick.shape, generator=generator, device=device) * self.counts[pick]).long()
        label = self.labels[self.offsets[pick] + within.clamp_(max=self.counts[pick] - 1)]
        items = self.items[pick]
        if self.out_edges is not None:  # (an unlabelled anchor keeps the uniform draw)
            items, label = torch.where(has, anchors, items), torch.where(has, anchor_label, label)
        return TaskBatch({"item": items}, {"label": label})

    def loss(self, rows: dict[str, Tensor], batch: TaskBatch, private: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(rows["item"] @ private["W"].T, batch.extra["label"])


class AlignTask(Task):
    name = "align"
    tables = ("user", "item")

    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        return TaskBatch({"user": rec_users, "item": rec_items})

    def loss(self, rows: dict[str, Tensor], batch: TaskBatch, private: dict[str, Tensor]) -> Tensor:
        u, i = F.normalize(rows["user"], dim=-1), F.normalize(rows["item"], dim=-1)
        return (u - i).pow(2).sum(-1).mean()


class _GramExpSum(torch.autograd.Function):
    """Σ_ab exp(4 a·b − 4) over every ordered pair of rows of x [n, D] (diagonal included), as a scalar.

    Autograd through ``addmm`` would spend two [n, n] × [n, D] matmuls on the backward, one per operand of
    x xᵀ. The matrix E = exp(4 x xᵀ − 4) is symmetric, so both are the same product and the gradient is
    one: ∂/∂x = 8 E x. E is the one [n, n] tensor kept for the backward, as autograd kept it before.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        terms = torch.addmm(x.new_full((1,), -4.0), x, x.T, alpha=4).exp_()
        ctx.save_for_backward(x, terms)
        return terms.sum()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        x, terms = ctx.saved_tensors
        return (terms @ x).mul_(grad * 8)


def uniformity(x: Tensor) -> Tensor:
    """log mean exp(−2||x_a − x_b||²) over the n(n − 1) / 2 distinct pairs a < b of the normalised rows of
    x [n, D]; 0 (no pair) when n < 2.

    On unit rows ||a − b||² = 2 − 2 a·b, so the terms are exp(4 a·b − 4): one [n, n] Gram matrix (a matmul,
    then exp in place) summed over the n(n − 1) ordered pairs a ≠ b (the whole matrix less its n diagonal
    terms), twice the sum over distinct pairs, so divided by n(n − 1). Its backward is one matmul
    (``_GramExpSum``). Against ``torch.pdist`` an align,uniform step on Ciao takes 0.64x the time, and the
    one-matmul backward takes a further share off (docs/performance.md); tests/train/test_task_losses.py
    holds it to the pairwise formula and to autograd through the plain expression.
    """
    n = x.shape[0]
    if n < 2:
        return x.sum() * 0
    x = F.normalize(x, dim=-1)
    every = _GramExpSum.apply(x)  # ordered pairs + diagonal
    diagonal = x.pow(2).sum(-1).mul(4).sub(4).exp().sum()  # exp(4||a||² − 4) ≈ 1 each
    return ((every - diagonal) / (n * (n - 1))).log()


class UniformTask(Task):
    name = "uniform"
    tables = ("user", "item")

    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        return TaskBatch({"user": rec_users, "item": rec_items})

    def loss(self, rows: dict[str, Tensor], batch: TaskBatch, private: dict[str, Tensor]) -> Tensor:
        return (uniformity(rows["user"]) + uniformity(rows["item"])) / 2


class RatingTask(Task):
    name = "rating"
    tables = ("user", "item")

    def __init__(self, data: TrainData, options: TaskOptions) -> None:
        if data.train.value is None:
            raise RecmtlError("--aux rating: the dataset's train table has no rating column")
        super().__init__(data, options)
        if options.aligned:  # (user, item) -> training row, to read the rating of a rec pair
            train = data.train
            keys = train.a * data.n_items + train.b
            self.keys, self.row_of_key = torch.sort(keys)

    def init_private(self, dim: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {
            "user_bias": torch.zeros(self.data.n_users),
            "item_bias": torch.zeros(self.data.n_items),
            "mu": self.data.train.value.float().mean().reshape(1).cpu(),
        }

    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        train = self.data.train
        size = self.options.batch_size
        if self.options.aligned:  # the anchored rec pairs with their training rating
            anchors = anchor_positions(generator, rec_users.numel(), size, train.a.device)
            pick = self.rated_rows(rec_users[anchors], rec_items[anchors])
            fallback = uniform_indices(generator, len(train), size, train.a.device)
            pick = torch.where(pick >= 0, pick, fallback)
        else:
            pick = uniform_indices(generator, len(train), size, train.a.device)
        u, i = train.a[pick], train.b[pick]
        return TaskBatch({"user": u, "item": i}, {"user": u, "item": i, "rating": train.value[pick]})

    def rated_rows(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] the training row of each (user, item) pair with a finite rating, -1 for a pair without one."""
        keys = users * self.data.n_items + items
        at = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        row = self.row_of_key[at]
        found = (self.keys[at] == keys) & torch.isfinite(self.data.train.value[row])
        return torch.where(found, row, -1)

    def loss(self, rows: dict[str, Tensor], batch: TaskBatch, private: dict[str, Tensor]) -> Tensor:
        e = batch.extra
        pred = (rows["user"] * rows["item"]).sum(-1)
        pred = pred + private["user_bias"][e["user"]] + private["item_bias"][e["item"]] + private["mu"]
        return F.mse_loss(pred, e["rating"])
