"""Matrix factorisation (METHODS.md §1): user table U [n_users, d], item table V [n_items, d],
score s(u, i) = <U_u, V_i>.

Both tables live in one storage ``weight`` [n_users + n_items, d] (users first, then items) so a training
step gathers, de-duplicates and updates all touched rows in one pass; ``tables`` gives the two views.
The shared rows are plain tensors updated row-wise by the trainer (no autograd on the full tables);
task-private parameters (a category head, rating biases) live in ``private`` and are ordinary leaves.
Init: normal(0, ``std``) by default (std 0.1), or xavier-uniform per table (bound sqrt(6 / (rows + d))).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from recmtl.errors import RecmtlError
from recmtl.model.base import Embedded

TABLES = ("user", "item")


def init_table(rows: int, dim: int, how: str, std: float, generator: torch.Generator) -> Tensor:
    """A [rows, dim] float32 table: normal(0, std) or xavier-uniform."""
    if how == "xavier":
        bound = (6.0 / (rows + dim)) ** 0.5
        return (torch.rand(rows, dim, generator=generator) * 2 - 1) * bound
    return torch.randn(rows, dim, generator=generator) * std


@dataclass
class MFModel:
    """Shared embedding rows (users then items) + task-private parameters, all on one device."""

    weight: Tensor  # [n_users + n_items, D]
    n_users: int
    private: dict[str, Tensor] = field(default_factory=dict)  # "task.param" -> leaf requiring grad

    @classmethod
    def create(cls, n_users: int, n_items: int, dim: int, how: str, std: float, seed: int) -> MFModel:
        gen = torch.Generator().manual_seed(seed)
        users = init_table(n_users, dim, how, std, gen)
        items = init_table(n_items, dim, how, std, gen)
        return cls(torch.cat([users, items]), n_users)

    def to(self, device: torch.device) -> MFModel:
        private = {k: v.detach().to(device).requires_grad_(True) for k, v in self.private.items()}
        return MFModel(self.weight.to(device), self.n_users, private)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def offsets(self) -> dict[str, int]:
        """Row offset of each table inside ``weight``."""
        return {"user": 0, "item": self.n_users}

    @property
    def table_rows(self) -> dict[str, range]:
        """The rows of each table inside ``weight``: "user" -> range(0, U), "item" -> range(U, U + I)."""
        return {"user": range(0, self.n_users), "item": range(self.n_users, self.weight.shape[0])}

    @property
    def tables(self) -> dict[str, Tensor]:
        """Views: "user" -> [n_users, D], "item" -> [n_items, D]."""
        return {"user": self.weight[: self.n_users], "item": self.weight[self.n_users :]}

    def embed(self, task: str, ids: Mapping[str, Tensor]) -> Embedded:
        """Every task reads the same rows: one leaf over the batch's user and item rows, which are also
        the vectors its loss consumes (``ids``: entity -> [m] ids)."""
        names = list(ids)
        rows = torch.cat([ids[n] + self.offsets[n] for n in names])
        leaf = self.weight.index_select(0, rows).requires_grad_(True)
        parts = torch.split(leaf, [ids[n].numel() for n in names])
        return Embedded(rows, leaf, dict(zip(names, parts, strict=True)))

    def user_embeddings(self) -> Tensor:
        """[U, D] user vectors used for ranking."""
        return self.weight[: self.n_users]

    def item_embeddings(self) -> Tensor:
        """[I, D] item vectors used for ranking."""
        return self.weight[self.n_users :]

    def state_tensors(self) -> dict[str, Tensor]:
        """Flat name -> tensor for checkpoints (``table.user``, ``table.item``, ``private.category.W``)."""
        out = {f"table.{k}": v.detach() for k, v in self.tables.items()}
        out |= {f"private.{k}": v.detach() for k, v in self.private.items()}
        return out

    @classmethod
    def from_state_tensors(cls, tensors: dict[str, Tensor]) -> MFModel:
        """The model a checkpoint holds; a RecmtlError if it holds other tables (e.g. STEM's)."""
        found = sorted(k.removeprefix("table.") for k in tensors if k.startswith("table."))
        if found != sorted(TABLES):
            raise RecmtlError(
                f"the checkpoint holds the tables {', '.join(found)}, not matrix factorisation's "
                f"({', '.join(TABLES)}): it was not trained with --encoder mf"
            )
        users, items = tensors["table.user"], tensors["table.item"]
        private = {
            k.removeprefix("private."): v.clone().requires_grad_(True)
            for k, v in tensors.items()
            if k.startswith("private.")
        }
        return cls(torch.cat([users, items]), users.shape[0], private)
