"""Gradient Vaccine (``gradvac``): pull every pair of task gradients towards a target cosine (METHODS.md §6).

Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
Massively Multilingual Models", ICLR 2021 (arXiv:2010.05874), Algorithm 1; torchjd ``GradVac``. For every task
i (gradient g_i, modified copy ĝ_i = g_i at the start) and every other task j, in a random order per i:

    φ_ij = <ĝ_i, g_j> / (‖ĝ_i‖ ‖g_j‖ + ε)
    if φ_ij < φ̂_ij:  ĝ_i ← ĝ_i + ‖ĝ_i‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²) + ε) · g_j
    φ̂_ij ← (1 − β) φ̂_ij + β φ_ij          (EMA target of the pair's cosine, from φ before the correction)

and the update is ``Σ_i ĝ_i``. With φ̂ = 0 and ε = 0 this is PCGrad. Everything is read from the Gram
matrix, as torchjd does: ĝ_i = Σ_k C_ik g_k, so ``<ĝ_i, g_j> = (C G)_ij`` and a correction adds w to C_ij; the
coefficients are ``C.sum(0)``. β = ``beta`` (0.5, torchjd's and LibMTL's default; the paper's own
experiments use a slow rate, β = 1e-2 [not verified against the paper's text here]), ε = ``eps`` (1e-8,
torchjd's). Batched over rows and over i: T steps, no loop over rows.

Conventions (vs torchjd):
- the visiting order comes from ``info.generator``: ``order = rand(R, T, T).argsort(-1)``, an independent
  permutation per (row, task) (torchjd: ``torch.randperm`` on the global RNG per task); without a generator
  the tasks are visited in index order. The output therefore depends on the draws: batched ≠ a loop over
  rows, and permuting the tasks changes the result (as in torchjd);
- ε is absolute, as in torchjd, so the method is not scale-equivariant: with gradients of norm ≲ 1e-4
  (per-row embedding gradients often are) ε dominates ‖ĝ_i‖‖g_j‖, φ shrinks towards 0 and the targets
  with it. ``eps = 0`` gives the scale-free method (0/0 := 0);
- a zero g_j is never "corrected" (torchjd adds ~‖ĝ_i‖ φ̂/ε times the zero vector: the same update, but an
  enormous coefficient); its pair's EMA is still updated, with φ = 0 as in torchjd;
- computed in float64 on the Gram (torchjd: in the Gram's dtype); ‖ĝ_i‖² is updated incrementally
  (torchjd recomputes it from C), equal up to rounding.

State: ``target`` — the EMA φ̂ of every ordered pair (i, j), zeros at the start (as torchjd). Global mode
(the paper's): ``[T, T]`` float64. Per-row, ours: ``[n_rows, T, T]`` float32 indexed by storage row id
(``info.rows``): each touched row runs the method on its own gradients with its own targets, and only the
pairs (i, j) of tasks both present on that row in this step are updated; untouched rows and pairs keep their
targets (they are saved with the checkpoint, so they survive ``--resume``). A row with one present task has
no pair: its gradient passes through unchanged (C = I) and its targets are untouched, so this method is the
identity on single-task rows. Memory: 4·T² bytes per storage row (64 at T = 4), copied once per step (the
new state is a new tensor). Logged task weights: the coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option

ROW_STATE_DTYPE = torch.float32  # per-row targets: [n_rows, T, T]; cosines need no more precision


def gradvac_in_order(
    gram: Tensor, present: Tensor, target: Tensor, order: Tensor, *, beta: float, eps: float
) -> tuple[Tensor, Tensor]:
    """GradVac's corrections in Gram form for a given visiting order (see the module docstring).

    ``gram`` [R, T, T], ``present`` [R, T] bool, ``target`` [R, T, T] the EMA targets φ̂ (any float dtype),
    ``order`` [R, T, T] long (``order[r, i]`` a permutation of range(T): the order in which task i visits the
    others; i itself is skipped) → ``(C, new_target)``, both float64 [R, T, T]: the modified gradients
    ``ĝ_ri = Σ_k C[r, i, k] g_rk`` (rows of absent tasks 0), and the targets with every visited pair (i, j),
    both present and i ≠ j, moved by the EMA; all other entries unchanged. T masked steps.
    """
    R, T = present.shape
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    g = torch.where(keep, gram.to(torch.float64), 0.0)
    g = 0.5 * (g + g.transpose(1, 2))
    finite = torch.isfinite(g).all(dim=(1, 2))  # a row with a non-finite entry: no correction, no EMA
    g = torch.where(finite.view(R, 1, 1), g, 0.0)
    diag = torch.diagonal(g, dim1=1, dim2=2)  # [R, T]
    norms = diag.clamp(min=0.0).sqrt()
    phi_hat = target.to(torch.float64)
    eye = torch.eye(T, dtype=torch.float64, device=gram.device)
    c = torch.where(present.unsqueeze(2), eye, 0.0).expand(R, T, T).contiguous()
    cg = g.clone()  # (C G)[i, k] = <ĝ_i, g_k>
    norm2 = diag.clone()  # ‖ĝ_i‖²
    new_target = phi_hat.clone()
    tasks = torch.arange(T, device=gram.device)
    for step in range(T):
        j = order[:, :, step]  # [R, T]: the task each i visits now
        visit = (j != tasks) & present & present.gather(1, j) & finite.unsqueeze(1)
        dot = cg.gather(2, j.unsqueeze(2)).squeeze(2)  # <ĝ_i, g_j>
        norm_i, norm_j = norm2.clamp(min=0.0).sqrt(), norms.gather(1, j)
        phi = safe_div(dot, norm_i * norm_j + eps)
        hat = phi_hat.gather(2, j.unsqueeze(2)).squeeze(2)
        root_phi = (1.0 - phi * phi).clamp(min=0.0).sqrt()
        root_hat = (1.0 - hat * hat).clamp(min=0.0).sqrt()
        w = safe_div(norm_i * (hat * root_phi - phi * root_hat), norm_j * root_hat + eps)
        w = torch.where(visit & (phi < hat) & (norm_j > 0) & torch.isfinite(w), w, 0.0)
        c = c.scatter_add(2, j.unsqueeze(2), w.unsqueeze(2))
        g_j = g.gather(1, j.unsqueeze(2).expand(R, T, T))  # [R, i, k] = G[j(i), k]
        cg = cg + w.unsqueeze(2) * g_j
        norm2 = norm2 + w * (2.0 * dot + w * norm_j * norm_j)
        ema = torch.where(visit, (1.0 - beta) * hat + beta * phi, hat)
        new_target = new_target.scatter(2, j.unsqueeze(2), ema.unsqueeze(2))
    return c, new_target


def visiting_order(
    n_rows: int, n_tasks: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """[R, T, T] long: an independent random permutation of range(T) per (row, task), drawn from
    ``generator`` (R·T·T uniforms); index order for every (row, task) when ``generator`` is None."""
    if generator is None:
        return torch.arange(n_tasks, device=device).expand(n_rows, n_tasks, n_tasks)
    draws = torch.rand(n_rows, n_tasks, n_tasks, generator=generator, device=generator.device)
    return draws.argsort(dim=-1).to(device)


@dataclass(frozen=True)
class GradVac(Aggregator):
    """Gradient Vaccine (see the module docstring)."""

    beta: float = option(
        0.5, low=0.0, high=1.0, help="EMA rate β of the target cosines (torchjd/LibMTL's; the paper: 1e-2)"
    )
    eps: float = option(1e-8, low=0.0, help="absolute ε in the denominators (torchjd's); 0: scale-free")

    name: ClassVar[str] = "gradvac"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    summary: ClassVar[str] = (
        "sum of the task gradients, each pulled towards the others until their cosine reaches a moving target"
    )
    paper: ClassVar[str] = (
        "Wang, Tsvetkov, Firat & Cao, Gradient Vaccine: Investigating and Improving Multi-task Optimization "
        "in Massively Multilingual Models, ICLR 2021"
    )
    # one present task: no pair, C = I (coefficient exactly 1) and no target is touched
    identity_on_single_task: ClassVar[bool] = True

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        if mode == "global":
            return {"target": torch.zeros(n_tasks, n_tasks, dtype=torch.float64)}
        return {"target": torch.zeros(n_rows, n_tasks, n_tasks, dtype=ROW_STATE_DTYPE)}

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        R, T = grads.present.shape
        device = grads.present.device
        stored = state["target"].to(device)
        if stored.dim() == 2:  # global state: one row (R' = 1)
            if R != 1 or stored.shape != (T, T):
                raise ValueError(f"gradvac: global state {tuple(stored.shape)} for {R} row(s) of {T} tasks")
            target = stored.unsqueeze(0)
        else:
            rows = info.rows(R, device)
            if rows.numel() != R or stored.shape[1:] != (T, T):
                raise ValueError(
                    f"gradvac: per-row state {tuple(stored.shape)} for {rows.numel()} row id(s), {R} rows, "
                    f"{T} tasks"
                )
            target = stored.index_select(0, rows)
        order = visiting_order(R, T, info.generator, device)
        c, new_target = gradvac_in_order(
            grads.gram(), grads.present, target, order, beta=float(self.beta), eps=float(self.eps)
        )
        new_target = new_target.to(stored.dtype)
        new_state = new_target[0] if stored.dim() == 2 else stored.index_copy(0, rows, new_target)
        dtype = compute_dtype(grads.values.dtype)
        coefficients = torch.where(grads.present, c.sum(dim=1), 0.0)
        return Weights(
            coefficients.clamp(min=torch.finfo(dtype).min, max=torch.finfo(dtype).max).to(dtype),
            {"target": new_state},
        )
