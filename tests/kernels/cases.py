"""Inputs for the kernel tests: task gradients as a training step gathers them (entries in any order, a
(row, task) pair gathered several times, absent tasks, rows touched by one task), and the tolerances."""

from __future__ import annotations

import torch

from recmtl.aggregators import TaskGrads

#: Tolerances of the kernels against the reference (recmtl/kernels/reference.py states them).
FP32 = {"rtol": 1e-5, "atol": 1e-6}
BF16_UPDATE = {"rtol": 1e-2, "atol": 1e-3}


def entries(
    n_rows: int,
    n_tasks: int,
    dim: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    duplicates: bool = True,
) -> TaskGrads:
    """Gathered entries of ``n_rows`` rows: each task present with probability 0.6 (every row has at least one
    task; row 0 has them all, row 1 only the main task, row 2 a main gradient of zeros and, where T > 1, row 3
    a zero auxiliary gradient), one or (``duplicates``) up to three entries per present (row, task), shuffled;
    gradient scales from 1e-2 to 10 per (row, task)."""
    gen = torch.Generator().manual_seed(seed)
    present = torch.rand(n_rows, n_tasks, generator=gen) < 0.6
    present[torch.arange(n_rows), torch.randint(0, n_tasks, (n_rows,), generator=gen)] = True
    if n_rows > 1:
        present[0] = True
        present[1] = False
        present[1, 0] = True
    slots = present.nonzero()  # [S, 2] (row, task)
    repeat = torch.randint(1, 4 if duplicates else 2, (slots.shape[0],), generator=gen)
    slots = slots.repeat_interleave(repeat, dim=0)
    scale = 10.0 ** torch.randint(-2, 2, (slots.shape[0], 1), generator=gen).float()
    values = torch.randn(slots.shape[0], dim, generator=gen) * scale
    if n_rows > 2:
        values[(slots[:, 0] == 2) & (slots[:, 1] == 0)] = 0.0
    if n_rows > 3 and n_tasks > 1:
        values[(slots[:, 0] == 3) & (slots[:, 1] == n_tasks - 1)] = 0.0
    perm = torch.randperm(slots.shape[0], generator=gen)
    slots, values = slots[perm], values[perm]
    return TaskGrads.from_entries(
        values.to(dtype).to(device), slots[:, 0].to(device), slots[:, 1].to(device), n_rows, n_tasks
    )


def coefficients(n_rows: int, n_tasks: int, grads: TaskGrads, *, seed: int = 1) -> torch.Tensor:
    """Arbitrary coefficients [R, T] (negative ones too), 0 where a task is absent."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(n_rows, n_tasks, generator=gen).to(grads.values.device)
    return torch.where(grads.present, c, 0.0)
