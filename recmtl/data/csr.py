"""Compressed sparse rows of (user, item) pairs: the per-user item lists that ranking masks and scores.

Built once from parallel id columns (:meth:`CSR.from_pairs`); :func:`recmtl.data.tensors.split_targets`
builds the positives and exclusions of an evaluation split with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class CSR:
    """Compressed sparse rows of (user, item) pairs: row ``u`` is ``indices[indptr[u]:indptr[u+1]]``.

    Attributes:
        indptr: int64 ``[U + 1]``, ``indptr[0] == 0``, non-decreasing, ``indptr[-1] == nnz``.
        indices: int64 ``[nnz]``, item ids ``>= 0`` (sorted and unique within a row when built with
            :meth:`from_pairs`; :func:`rank_users` does not require it).
    """

    indptr: Tensor
    indices: Tensor

    def __post_init__(self) -> None:
        for name, t in (("indptr", self.indptr), ("indices", self.indices)):
            if not isinstance(t, Tensor) or t.dtype != torch.long or t.dim() != 1:
                found = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"CSR.{name} must be a 1-D int64 tensor, got {found}")
        if self.indptr.device != self.indices.device:
            raise ValueError(f"CSR.indptr is on {self.indptr.device} but indices on {self.indices.device}")
        if self.indptr.numel() == 0:
            raise ValueError("CSR.indptr must hold at least one entry (indptr[0] == 0)")
        ptr = self.indptr.cpu()
        if int(ptr[0]) != 0 or int(ptr[-1]) != self.indices.numel() or bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError(
                f"CSR.indptr must start at 0, be non-decreasing and end at nnz={self.indices.numel()}, "
                f"got indptr[0]={int(ptr[0])}, indptr[-1]={int(ptr[-1])}"
            )
        if self.indices.numel() and int(self.indices.min()) < 0:
            raise ValueError(f"CSR.indices must be >= 0, got {int(self.indices.min())}")

    @classmethod
    def from_pairs(cls, user_ids: Tensor, item_ids: Tensor, n_users: int) -> CSR:
        """Build from parallel ``[N]`` id tensors; pairs are sorted by (user, item) and de-duplicated.

        Raises ``ValueError`` when a user id is outside ``[0, n_users)`` or an item id is negative.
        """
        user_ids = torch.as_tensor(user_ids)
        item_ids = torch.as_tensor(item_ids, device=user_ids.device)
        if user_ids.dim() != 1 or user_ids.shape != item_ids.shape:
            raise ValueError(
                f"user_ids and item_ids must be 1-D of the same length, got {tuple(user_ids.shape)} "
                f"and {tuple(item_ids.shape)}"
            )
        for name, t in (("user_ids", user_ids), ("item_ids", item_ids)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(f"{name} must be an integer tensor, got {t.dtype}")
        user_ids, item_ids = user_ids.long(), item_ids.long()
        if n_users < 0:
            raise ValueError(f"n_users must be >= 0, got {n_users}")
        device = user_ids.device
        if user_ids.numel() == 0:
            return cls(torch.zeros(n_users + 1, dtype=torch.long, device=device), item_ids)
        u_min, u_max = int(user_ids.min()), int(user_ids.max())
        if u_min < 0 or u_max >= n_users:
            bad = u_min if u_min < 0 else u_max
            raise ValueError(f"user id {bad} is outside [0, n_users={n_users})")
        i_min = int(item_ids.min())
        if i_min < 0:
            raise ValueError(f"item ids must be >= 0, got {i_min}")
        width = int(item_ids.max()) + 1
        keys = torch.unique(user_ids * width + item_ids, sorted=True)  # sorts and de-duplicates
        users = keys // width
        counts = torch.bincount(users, minlength=n_users)
        indptr = torch.zeros(n_users + 1, dtype=torch.long, device=device)
        indptr[1:] = counts.cumsum(0)
        return cls(indptr, keys % width)

    @property
    def n_rows(self) -> int:
        """U, the number of rows (users)."""
        return self.indptr.numel() - 1

    @property
    def nnz(self) -> int:
        """The number of stored pairs."""
        return self.indices.numel()

    def counts(self) -> Tensor:
        """int64 ``[U]``: the number of items in each row."""
        return self.indptr[1:] - self.indptr[:-1]

    def row_ids(self) -> Tensor:
        """int64 ``[nnz]``: the row of each stored item."""
        rows = torch.arange(self.n_rows, device=self.indptr.device)
        return torch.repeat_interleave(rows, self.counts(), output_size=self.nnz)

    def take_rows(self, rows: Tensor) -> CSR:
        """The CSR made of rows ``rows`` (int64 ``[R]``, in that order): row ``r`` of the result is row
        ``rows[r]`` of ``self``."""
        rows = rows.to(device=self.indptr.device, dtype=torch.long)
        starts = self.indptr[rows]
        counts = self.indptr[rows + 1] - starts
        indptr = torch.zeros(rows.numel() + 1, dtype=torch.long, device=rows.device)
        indptr[1:] = counts.cumsum(0)
        total = int(indptr[-1])
        shift = torch.repeat_interleave(starts - indptr[:-1], counts, output_size=total)
        positions = torch.arange(total, device=rows.device) + shift
        return CSR(indptr, self.indices[positions])

    def to(self, device: torch.device | str) -> CSR:
        """The same CSR on ``device``."""
        return CSR(self.indptr.to(device), self.indices.to(device))
