"""Random Jacobians and per-row batches shared by the method test files (a plain module)."""

from __future__ import annotations

import torch

F64 = torch.float64

# (T, D): D = T − 1 is rank-deficient; up to 10 000
SHAPES = [(2, 1), (2, 64), (3, 2), (3, 10), (3, 1000), (5, 4), (5, 64), (5, 10_000)]


# --- inputs -------------------------------------------------------------------------------------------------
def jacobian(T: int, D: int, seed: int, orders: float = 4.0, conflict: bool = False) -> torch.Tensor:
    """Random [T, D] gradients with norms spread over ``orders`` orders of magnitude: around a common
    direction (aligned) or alternately along and against it (conflicting)."""
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(T, D, generator=gen, dtype=F64)
    common = torch.randn(1, D, generator=gen, dtype=F64)
    signs = (-1.0) ** torch.arange(T, dtype=F64).view(T, 1) if conflict else torch.ones(T, 1, dtype=F64)
    J = J + 1.5 * signs * common
    J = J / J.norm(dim=1, keepdim=True)
    scales = torch.logspace(0, -orders, T, dtype=F64)[torch.randperm(T, generator=gen)]
    return J * scales.unsqueeze(1)


def batch(R: int, T: int, D: int, seed: int, spread: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random per-row gradients [R, T, D] (norms over 10^±spread) and a mask with 0, 1, 2 and T tasks."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(R, T, D, generator=gen, dtype=F64)
    g = g * 10 ** ((torch.rand(R, T, 1, generator=gen, dtype=F64) * 2 - 1) * spread)
    present = torch.rand(R, T, generator=gen) < 0.7
    present[0] = False
    if R > 1:
        present[1] = False
        present[1, T - 1] = True
    if R > 3:
        present[2] = False
        present[2, : min(2, T)] = True
        present[3] = True
    return torch.where(present.unsqueeze(2), g, 0.0), present
