"""The task interface (METHODS.md §2): what a task samples, which embedding rows it touches, its loss.

A step asks every active task for a :class:`TaskBatch` (row ids per shared table plus whatever the loss
needs), gathers those rows as separate leaves, and calls :meth:`Task.loss` on them. Because each task gets
its own gathered leaves, one backward of the summed losses yields every task's gradient on its rows.

Auxiliary sampling, ``TaskOptions.sampling`` [reading] (METHODS.md §4.5; ``--aux-sampling``):

- ``"independent"`` (default): each auxiliary task draws its batch uniformly from its own table, whatever
  the rec batch holds;
- ``"aligned"``: each auxiliary batch is anchored on the rec batch's rows. ``batch_size`` anchors are
  chosen among the B rec positions by :func:`anchor_positions` (without replacement when ``batch_size``
  <= B, every position repeated ``batch_size // B`` times plus a sample without replacement otherwise),
  and each anchor gives one sample of the task through :class:`OutEdges` (a uniform choice among the
  anchor's out-edges / labels). An anchor with none falls back to the independent draw of that sample.

Losses read their batch size from the batch, never from the options.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from recmtl.data.csr import CSR
from recmtl.data.tensors import PairSet, TrainData

#: ``TaskOptions.sampling`` values (``--aux-sampling``), the default first.
SAMPLINGS = ("independent", "aligned")


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
    sampling: str = "independent"  # [reading] independent | aligned (see the module docstring)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(
                f"TaskOptions.sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}"
            )

    @property
    def aligned(self) -> bool:
        return self.sampling == "aligned"


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


def anchor_positions(generator: torch.Generator, n_anchors: int, size: int, device: torch.device) -> Tensor:
    """``size`` positions in range(``n_anchors``) (the rec batch's rows an aligned batch anchors on): a
    uniform sample without replacement when ``size <= n_anchors``; otherwise every position
    ``size // n_anchors`` times followed by a sample without replacement of ``size % n_anchors`` more.
    One ``randperm(n_anchors)`` from ``generator`` in both cases."""
    if n_anchors < 1:
        raise ValueError(f"anchor_positions: no anchor to choose from (n_anchors = {n_anchors})")
    reps, rest = divmod(size, n_anchors)
    perm = torch.randperm(n_anchors, generator=generator, device=device)
    if reps == 0:
        return perm[:size]
    return torch.cat([torch.arange(n_anchors, device=device).repeat(reps), perm[:rest]])


class OutEdges:
    """The out-edges of a directed relation ``src -> dst`` over ``n_src`` sources, as CSR (duplicate pairs
    counted once): :meth:`pick` draws one out-edge per anchor, uniformly among the anchor's."""

    def __init__(self, src: Tensor, dst: Tensor, n_src: int) -> None:
        csr = CSR.from_pairs(src, dst, n_src)
        self.indptr, self.indices = csr.indptr, csr.indices

    def degree(self, anchors: Tensor) -> Tensor:
        """[B] the number of out-edges of each anchor."""
        return self.indptr[anchors + 1] - self.indptr[anchors]

    def pick(self, generator: torch.Generator, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """For ``anchors`` [B]: (has [B] bool: the anchor has an out-edge, dst [B]: a uniform one of them;
        an arbitrary valid id where ``has`` is False). One ``rand(B)`` from ``generator``."""
        start = self.indptr[anchors]
        count = self.indptr[anchors + 1] - start
        u = torch.rand(anchors.shape, generator=generator, device=anchors.device)
        offset = torch.minimum((u * count).long(), (count - 1).clamp(min=0))
        position = (start + offset).clamp(max=max(self.indices.numel() - 1, 0))
        return count > 0, self.indices[position]
