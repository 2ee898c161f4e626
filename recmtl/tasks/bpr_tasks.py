"""The BPR tasks (METHODS.md §2): ``rec`` (main), ``social`` (user-user), ``coview`` / ``cobuy`` (item-item).

rec: (u, i+, i-) with i- uniform over items u has not interacted with in train (``--negatives N`` per
positive), BPR on <U_u, V_i>. social: (u, v+, v-) from the social table, BPR on <U_u, U_v>. coview/cobuy:
(i, j+, j-) from item_item edges of the task's kinds, BPR on <V_i, V_j>. Negatives are rejected against the
task's own positive set.

Sampling of the edge tasks (``TaskOptions.sampling``, see :mod:`recmtl.tasks.base`): ``independent``, uniform
edges; ``aligned``, one out-edge (u, v+) of each anchored rec user (social) or (i, j+) of each anchored rec
positive item (coview, cobuy), uniform among the anchor's out-edges, and a uniform edge for an anchor
without one.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from recmtl.data.tensors import Pairs, PairSet, TrainData
from recmtl.errors import RecmtlError
from recmtl.tasks.base import (
    OutEdges,
    Task,
    TaskBatch,
    TaskOptions,
    anchor_positions,
    bpr_loss,
    sample_negatives,
    uniform_indices,
)


class RecTask(Task):
    """The main task: BPR over the training interactions."""

    name = "rec"
    tables = ("user", "item")

    def __init__(self, data: TrainData, options: TaskOptions) -> None:
        super().__init__(data, options)
        self.known = PairSet(data.train.a, data.train.b, data.n_items)

    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        o = self.options
        neg = sample_negatives(
            generator, rec_users, o.negatives, self.data.n_items, self.known, o.negative_rounds
        )
        return TaskBatch({"user": rec_users, "item": torch.cat([rec_items, neg.reshape(-1)])})

    def loss(self, rows: dict[str, Tensor], batch: TaskBatch, private: dict[str, Tensor]) -> Tensor:
        users, items = rows["user"], rows["item"]
        b = users.shape[0]
        return bpr_loss(users, items[:b], items[b:].reshape(b, -1, items.shape[1]))


class _EdgeBPRTask(Task):
    """BPR over the directed edges of one graph whose both ends live in ``table``."""

    table: ClassVar[str]

    def __init__(self, data: TrainData, options: TaskOptions, edges: Pairs, n_nodes: int) -> None:
        super().__init__(data, options)
        self.edges = edges
        self.n_nodes = n_nodes
        self.known = PairSet(edges.a, edges.b, n_nodes)
        self.out_edges = OutEdges(edges.a, edges.b, n_nodes) if options.aligned else None

    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        o = self.options
        device = self.edges.a.device
        if self.out_edges is not None:  # aligned: an out-edge of each anchor, a uniform edge without one
            anchors = rec_users if self.table == "user" else rec_items
            anchors = anchors[anchor_positions(generator, anchors.numel(), o.batch_size, device)]
            has, dst = self.out_edges.pick(generator, anchors)
            pick = uniform_indices(generator, len(self.edges), o.batch_size, device)
            src = torch.where(has, anchors, self.edges.a[pick])
            dst = torch.where(has, dst, self.edges.b[pick])
        else:
            pick = uniform_indices(generator, len(self.edges), o.batch_size, device)
            src, dst = self.edges.a[pick], self.edges.b[pick]
        neg = sample_negatives(generator, src, o.negatives, self.n_nodes, self.known, o.negative_rounds)
        return TaskBatch({self.table: torch.cat([src, dst, neg.reshape(-1)])})

    def loss(self, rows: dict[str, Tensor], batch: TaskBatch, private: dict[str, Tensor]) -> Tensor:
        x = rows[self.table]
        b = x.shape[0] // (2 + self.options.negatives)  # [src, dst, negatives]: the batch's own size
        return bpr_loss(x[:b], x[b : 2 * b], x[2 * b :].reshape(b, -1, x.shape[1]))


class SocialTask(_EdgeBPRTask):
    name = "social"
    tables = ("user",)
    table = "user"

    def __init__(self, data: TrainData, options: TaskOptions) -> None:
        if data.social is None or len(data.social) == 0:
            raise RecmtlError("--aux social: the dataset has no social table (social.parquet)")
        super().__init__(data, options, data.social, data.n_users)


class _ItemPairTask(_EdgeBPRTask):
    tables = ("item",)
    table = "item"
    kinds: ClassVar[tuple[str, ...]]

    def __init__(self, data: TrainData, options: TaskOptions) -> None:
        parts = [data.item_item[k] for k in self.kinds if k in data.item_item]
        if not parts or sum(len(p) for p in parts) == 0:
            found = ", ".join(data.item_item) or "no item_item table"
            raise RecmtlError(
                f"--aux {self.name}: the dataset has no item_item edges of kind {' / '.join(self.kinds)} "
                f"(found: {found})"
            )
        edges = Pairs(torch.cat([p.a for p in parts]), torch.cat([p.b for p in parts]))
        super().__init__(data, options, edges, data.n_items)


class CoviewTask(_ItemPairTask):
    name = "coview"
    kinds = ("also_viewed", "co_viewed", "co_rated")


class CobuyTask(_ItemPairTask):
    name = "cobuy"
    kinds = ("also_bought", "bought_together")
