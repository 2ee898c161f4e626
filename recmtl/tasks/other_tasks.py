"""The non-BPR tasks (METHODS.md §2).

category: (i, c) from item_category; softmax cross-entropy over V_i Wᵀ with W [C, D] task-private. Items are
sampled uniformly among labelled items and a multi-label item contributes one of its labels per step.
align / uniform: DirectAU (Wang et al., KDD 2022) on the rec batch's (u, i+): alignment
mean ||Ũ_u − Ṽ_i||², uniformity (log mean exp(−2||x−y||²) over users + over items) / 2, on L2-normalised rows.
rating: (u, i, r) over training rows with a rating; MSE of s(u, i) + b_u + b_i + μ (biases task-private).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recmtl.data.tensors import TrainData
from recmtl.errors import RecmtlError
from recmtl.tasks.base import Task, TaskBatch, TaskOptions, uniform_indices


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

    def init_private(self, dim: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {"W": torch.randn(self.data.n_categories, dim, generator=generator) * self.options.init_std}

    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        device = self.items.device
        pick = uniform_indices(generator, self.items.numel(), self.options.batch_size, device)
        within = (torch.rand(pick.shape, generator=generator, device=device) * self.counts[pick]).long()
        label = self.labels[self.offsets[pick] + within.clamp_(max=self.counts[pick] - 1)]
        return TaskBatch({"item": self.items[pick]}, {"label": label})

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


def uniformity(x: Tensor) -> Tensor:
    """log mean exp(−2||x_a − x_b||²) over distinct pairs of the normalised rows of x [n, D]."""
    x = F.normalize(x, dim=-1)
    return torch.pdist(x, p=2).pow(2).mul(-2).exp().mean().log()


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

    def init_private(self, dim: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {
            "user_bias": torch.zeros(self.data.n_users),
            "item_bias": torch.zeros(self.data.n_items),
            "mu": self.data.train.value.float().mean().reshape(1).cpu(),
        }

    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        train = self.data.train
        pick = uniform_indices(generator, len(train), self.options.batch_size, train.a.device)
        u, i = train.a[pick], train.b[pick]
        return TaskBatch({"user": u, "item": i}, {"user": u, "item": i, "rating": train.value[pick]})

    def loss(self, rows: dict[str, Tensor], batch: TaskBatch, private: dict[str, Tensor]) -> Tensor:
        e = batch.extra
        pred = (rows["user"] * rows["item"]).sum(-1)
        pred = pred + private["user_bias"][e["user"]] + private["item_bias"][e["item"]] + private["mu"]
        return F.mse_loss(pred, e["rating"])
