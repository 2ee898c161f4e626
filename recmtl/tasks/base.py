"""The task interface (METHODS.md §2): what a task samples, which embedding rows it touches, its loss.

A step asks every active task for a :class:`TaskBatch` (row ids per shared table plus whatever the loss
needs), gathers those rows as separate leaves, and calls :meth:`Task.loss` on them. Because each task gets
its own gathered leaves, one backward of the summed losses yields every task's gradient on its rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from recmtl.data.tensors import PairSet, TrainData


@dataclass(frozen=True)
class TaskBatch:
    """ids: table name ("user" / "item") -> LongTensor[n] rows to gather (duplicates allowed).
    extra: tensors the loss needs besides the gathered rows (labels, ratings, ...)."""

    ids: dict[str, Tensor]
    extra: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskOptions:
    """Sampling options shared by the tasks."""

    batch_size: int = 2048  # auxiliary batch size (the rec batch comes from the epoch's shuffle)
    negatives: int = 1
    init_std: float = 0.1
    negative_rounds: int = 3  # rejection rounds for negatives that hit a known positive


class Task(ABC):
    """One training objective. Subclasses set ``name`` and ``tables`` and implement ``sample``/``loss``."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]  # shared tables whose rows it touches

    def __init__(self, data: TrainData, options: TaskOptions) -> None:
        self.data = data
        self.options = options

    def init_private(self, dim: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Task-private parameters (name -> tensor), created on the CPU generator; default none."""
        return {}

    @abstractmethod
    def sample(self, generator: torch.Generator, rec_users: Tensor, rec_items: Tensor) -> TaskBatch:
        """This step's batch. ``rec_users``/``rec_items`` [B] are the rec task's positive pairs."""

    @abstractmethod
    def loss(self, rows: dict[str, Tensor], batch: TaskBatch, private: dict[str, Tensor]) -> Tensor:
        """Scalar loss from the gathered ``rows`` (table -> [n, D], aligned with ``batch.ids``)."""


def bpr_loss(anchor: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
    """Mean BPR loss -log σ(<a, p> - <a, n>). anchor, positive: [B, D]; negatives: [B, N, D]."""
    pos = (anchor * positive).sum(-1, keepdim=True)  # [B, 1]
    neg = (anchor.unsqueeze(1) * negatives).sum(-1)  # [B, N]; elementwise beats a batched [1, D]x[D, N] bmm
    return -F.logsigmoid(pos - neg).mean()


def sample_negatives(
    generator: torch.Generator,
    anchors: Tensor,
    n_negatives: int,
    n_candidates: int,
    known: PairSet,
    rounds: int,
) -> Tensor:
    """Uniform negatives [B, N] for ``anchors`` [B], re-drawn up to ``rounds`` times while (anchor, neg) is a
    known positive. A fixed number of vectorised rounds, so a rare leftover positive may remain."""
    shape = (anchors.numel(), n_negatives)
    device = anchors.device
    negatives = torch.randint(n_candidates, shape, generator=generator, device=device)
    expanded = anchors[:, None].expand(shape)
    for _ in range(rounds):
        hit = known.contains(expanded, negatives)
        redraw = torch.randint(n_candidates, shape, generator=generator, device=device)
        negatives = torch.where(hit, redraw, negatives)
    return negatives


def uniform_indices(generator: torch.Generator, n: int, size: int, device: torch.device) -> Tensor:
    """``size`` indices drawn uniformly with replacement from range(n)."""
    return torch.randint(n, (size,), generator=generator, device=device)
