"""What every encoder gives the training step and the evaluation (METHODS.md §1, §7).

An encoder owns the embedding rows, all in one row storage ``weight`` [N, D] (its tables are row ranges
of it, ``table_rows``), and task-private dense parameters (``private``). The training step asks it, per
task, for :meth:`Encoder.embed`: the task's batch ids in, an :class:`Embedded` out — the storage rows the
task's gradient may reach, gathered as one leaf, and the vectors its loss consumes. The step never
branches on the encoder: it back-propagates, reads ``leaf.grad`` and updates those rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Embedded:
    """One task's embeddings for one step.

    ids [n]: the storage rows gathered as ``leaf`` [n, D] (requires grad: after the backward,
    ``leaf.grad`` holds the task's gradient on each of them, one entry per id, duplicates allowed);
    rows: entity ("user" / "item") -> [m, D] the vectors the task's loss reads, aligned with the batch ids.
    """

    ids: Tensor
    leaf: Tensor
    rows: dict[str, Tensor]


class Encoder(Protocol):
    """The interface of :class:`~recmtl.model.mf.MFModel` and :class:`~recmtl.model.stem.StemModel`."""

    weight: Tensor  # [N, D] every embedding row (the trainer's row-sparse Adam owns the storage)
    private: dict[str, Tensor]  # "task.param" (or "gate.task.entity.param") -> dense leaf

    @property
    def dim(self) -> int: ...

    @property
    def table_rows(self) -> Mapping[str, range]:
        """Table name -> its rows in ``weight``, in storage order (names start with their entity)."""
        ...

    @property
    def tables(self) -> dict[str, Tensor]:
        """Table name -> view of its rows in ``weight``."""
        ...

    def embed(self, task: str, ids: Mapping[str, Tensor]) -> Embedded:
        """Task ``task``'s embeddings of the batch ``ids`` (entity -> [m] ids within the entity)."""
        ...

    def user_embeddings(self) -> Tensor:
        """[U, D] the main task's user vectors (for ranking)."""
        ...

    def item_embeddings(self) -> Tensor:
        """[I, D] the main task's item vectors (for ranking)."""
        ...

    def state_tensors(self) -> dict[str, Tensor]: ...

    def to(self, device: torch.device) -> Encoder: ...


def entity_of(table: str) -> str:
    """The entity a table holds: ``user`` for ``user`` and ``user.rec``."""
    return table.partition(".")[0]
