"""Encoders (``recmtl train --encoder``): matrix factorisation (``mf``, one user and one item table every task
shares) and STEM (``stem``, shared + task-specific tables with stop-gradient gates). Both follow
:class:`recmtl.model.base.Encoder`; :func:`create_encoder` and :func:`load_encoder` pick one by name."""

from __future__ import annotations

import torch

from recmtl.errors import RecmtlError
from recmtl.model.base import Embedded, Encoder
from recmtl.model.mf import MFModel
from recmtl.model.stem import StemLayout, StemModel

#: ``--encoder`` names.
ENCODERS = ("mf", "stem")


def create_encoder(
    name: str,
    *,
    n_users: int,
    n_items: int,
    dim: int,
    init: str,
    init_std: float,
    seed: int,
    layout: StemLayout,
) -> MFModel | StemModel:
    """A freshly initialised encoder ``name`` (``layout``: the tasks and STEM options; mf ignores them)."""
    if name == "stem":
        return StemModel.create(n_users, n_items, dim, init, init_std, seed, layout)
    if name == "mf":
        return MFModel.create(n_users, n_items, dim, init, init_std, seed)
    raise RecmtlError(f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})")


def load_encoder(name: str, tensors: dict[str, torch.Tensor], layout: StemLayout) -> MFModel | StemModel:
    """The encoder ``name`` a checkpoint's ``tensors`` hold; a RecmtlError when they are another
    encoder's (a STEM checkpoint is never read as matrix factorisation, nor the reverse)."""
    if name == "stem":
        return StemModel.from_state_tensors(tensors, layout)
    if name == "mf":
        return MFModel.from_state_tensors(tensors)
    raise RecmtlError(f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})")


__all__ = ["ENCODERS", "Embedded", "Encoder", "MFModel", "StemLayout", "StemModel", "create_encoder",
           "load_encoder"]  # fmt: skip
