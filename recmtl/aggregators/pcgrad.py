"""PCGrad (``pcgrad``): project each task gradient off the gradients it conflicts with (METHODS.md §6).

Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020
(Algorithm 1).

For a row with present tasks A and gradients g_t: for every i ∈ A, start from ĝ_i = g_i and, for j over the
other present tasks in a random order,

    if <ĝ_i, g_j> < 0:   ĝ_i ← ĝ_i − <ĝ_i, g_j> / ‖g_j‖² · g_j

(projection onto the normal plane of g_j, only when they conflict; zero gradients g_j are skipped). The
update is the **sum** ``d = Σ_{i∈A} ĝ_i`` (the paper's Algorithm 1, torchjd's ``PCGrad`` and LibMTL; some
re-implementations, e.g. Pytorch-PCGrad's default, take the mean, 1/|A| of ours). Everything is in Gram
form (:func:`recmtl.aggregators._math.conflict_projection`): ``ĝ_i = Σ_k P_ik g_k`` and the coefficients are
``c_k = Σ_i P_ik``; absent tasks get 0.

Random order: each (row, task i) draws its own independent uniform permutation of the tasks from
``StepInfo.generator`` (R·T·T uniforms per call), as torchjd and LibMTL draw a fresh ``randperm`` /
``shuffle`` for every task i (the authors' TensorFlow code calls ``tf.random.shuffle`` but discards its
result, so it projects in the fixed task order); j = i is skipped, as in torchjd (the authors' code and
LibMTL include it, which changes nothing unless ⟨ĝ_i, g_i⟩ has turned negative). The same generator state
gives the same result; the result depends on the task and row order (randomised), so permutation invariance
and "batched == loop over rows" hold in distribution only (contract exemptions). No other source of
randomness is used; the generator is required.

Per-row mode (ours): the projections on each touched row's [T, d] gradients, all rows at once; global mode
(R = 1, all touched rows flattened) is the paper's. A row with one present task has nothing to project
onto: coefficient exactly 1 (``identity_on_single_task``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, conflict_projection
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, finite_gram


def pcgrad_weights(gram: Tensor, present: Tensor, generator: torch.Generator) -> Tensor:
    """PCGrad's coefficients c [R, T] (float64) from the Gram [R, T, T]: ``c_k = Σ_i P_ik`` with ``P`` the
    projection matrices of :func:`~recmtl.aggregators._math.conflict_projection` (random orders)."""
    return conflict_projection(gram, present, generator).sum(dim=1)


@dataclass(frozen=True)
class PCGrad(Aggregator):
    """PCGrad: sum of the task gradients, each projected off the ones it conflicts with. No options."""

    name: ClassVar[str] = "pcgrad"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    summary: ClassVar[str] = (
        "sum of the task gradients, each projected off the others it conflicts with (random order)"
    )
    paper: ClassVar[str] = "Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020"
    identity_on_single_task: ClassVar[bool] = True  # nothing to project onto: P = e_i e_iᵀ

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        if info.generator is None:
            raise ValueError("pcgrad: needs StepInfo.generator (its projection order is random)")
        gram, keep = finite_gram(grads)
        c = pcgrad_weights(gram, grads.present, info.generator)
        return Weights(torch.where(keep, c, 0.0).to(compute_dtype(grads.values.dtype)), state)
