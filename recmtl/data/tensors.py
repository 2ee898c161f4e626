"""A prepared dataset loaded into tensors (training and evaluation) and the targets of an evaluation split."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch
from torch import Tensor

from recmtl.data.csr import CSR
from recmtl.data.store import PreparedDataset
from recmtl.errors import RecmtlError


def _long(frame: pl.DataFrame, column: str) -> Tensor:
    return torch.from_numpy(frame[column].cast(pl.Int64).to_numpy().copy())


@dataclass(frozen=True)
class Pairs:
    """Parallel id columns: ``a[n]``, ``b[n]`` (LongTensor) and optional ``value[n]`` (float32)."""

    a: Tensor
    b: Tensor
    value: Tensor | None = None

    def __len__(self) -> int:
        return int(self.a.numel())

    def to(self, device: torch.device) -> Pairs:
        value = None if self.value is None else self.value.to(device)
        return Pairs(self.a.to(device), self.b.to(device), value)


class PairSet:
    """Membership test for (a, b) pairs, vectorised: sorted keys ``a * n_b + b`` and searchsorted."""

    def __init__(self, a: Tensor, b: Tensor, n_b: int) -> None:
        self.n_b = n_b
        self.keys = torch.unique(a.long() * n_b + b.long())  # sorted

    def contains(self, a: Tensor, b: Tensor) -> Tensor:
        """Bool tensor, same shape as ``a``: whether each (a, b) is in the set."""
        keys = a * self.n_b + b
        if self.keys.numel() == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == keys

    def to(self, device: torch.device) -> PairSet:
        out = PairSet.__new__(PairSet)
        out.n_b, out.keys = self.n_b, self.keys.to(device)
        return out


@dataclass(frozen=True)
class TrainData:
    """Everything training reads, as tensors on one device. Missing auxiliary tables are None."""

    n_users: int
    n_items: int
    train: Pairs  # user, item, rating?
    valid: Pairs
    test: Pairs
    social: Pairs | None
    item_category: Pairs | None  # item, category
    n_categories: int
    item_item: dict[str, Pairs]  # kind -> (src, dst)

    @classmethod
    def load(cls, dataset: PreparedDataset, device: torch.device) -> TrainData:
        def split(name: str) -> Pairs:
            frame = dataset.table(name)
            value = None
            if "rating" in frame.columns:
                value = torch.from_numpy(frame["rating"].cast(pl.Float32).to_numpy().copy())
            return Pairs(_long(frame, "user_id"), _long(frame, "item_id"), value).to(device)

        social = None
        if dataset.has("social"):
            frame = dataset.table("social")
            social = Pairs(_long(frame, "src"), _long(frame, "dst")).to(device)
        item_category, n_categories = None, 0
        if dataset.has("item_category"):
            frame = dataset.table("item_category")
            item_category = Pairs(_long(frame, "item_id"), _long(frame, "category_id")).to(device)
            n_categories = dataset.table("categories").height
        item_item: dict[str, Pairs] = {}
        if dataset.has("item_item"):
            frame = dataset.table("item_item")
            for (kind,), part in frame.group_by("kind", maintain_order=True):
                item_item[str(kind)] = Pairs(_long(part, "src"), _long(part, "dst")).to(device)
        return cls(
            n_users=dataset.n_users,
            n_items=dataset.n_items,
            train=split("train"),
            valid=split("valid"),
            test=split("test"),
            social=social,
            item_category=item_category,
            n_categories=n_categories,
            item_item=item_item,
        )


def split_targets(data: TrainData, split: str) -> tuple[CSR, CSR]:
    """Positives of ``split`` and the items masked before the top-K: train when validating, train + valid
    when testing (EVALUATION.md)."""
    if split not in ("valid", "test"):
        raise RecmtlError(f"--split {split!r}: expected valid or test")
    pairs = getattr(data, split)
    positives = CSR.from_pairs(pairs.a, pairs.b, data.n_users)
    masked = [data.train] if split == "valid" else [data.train, data.valid]
    exclude = CSR.from_pairs(torch.cat([p.a for p in masked]), torch.cat([p.b for p in masked]), data.n_users)
    return positives, exclude
