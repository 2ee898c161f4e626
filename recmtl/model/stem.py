"""STEM at the embedding level (`--encoder stem`; METHODS.md §7).

Su et al., "STEM: Unleashing the Power of Embeddings for Multi-task Recommendation", AAAI 2024 (code:
LiangcaiSu/STEM, FuxiCTR). Per entity type e (user, item): a shared table S_e and one table E_{e,t} for each
task t that touches e, every one [n_e, D] and every one rows of the single row storage ``weight``. Task t's
vector of entity x (K candidates):

    h_t(x) = Σ_k w_k · c_k,    c = [E_{e,t}[x],  sg(E_{e,k}[x]) for each other task k touching e,  S_e[x]]
    w = softmax(G_{t,e}(E_{e,t}[x] + S_e[x])),    G_{t,e}(z)_k = <W_k, z> + b_k    (W [K, D], b [K])

sg is the stop-gradient ("All Forward, Task-specific Backward"): task t's loss reaches its own table, the
shared table and its own gate, never another task's table, so no auxiliary loss ever changes the main
task's own tables. The gate reads the sum of the own and the shared row, as the authors' STEM_Layer does
(``gate[i](x[i] + x[-1])``). Candidate order: own, the other tasks in task order (main task first), shared.

Options (all recorded in the run's config):

- ``asymmetric``: only the main task reads the other tasks' tables; an auxiliary task's candidates are
  {own, shared} (the main task is then the only one that profits from the others' tables);
- ``stopgrad=False`` (ablation): the other tasks' rows are read *with* their gradient, so task t's loss
  also moves the other tasks' tables, the main task's included;
- ``shared=False`` (ablation): no shared tables; candidates {own, others}, gate input the own row.

Dimensions: every table is D wide (``--stem-dim`` must equal ``--dim``). The candidates are summed and the
gate reads own + shared, which needs one width — as in the authors' code, where each task's embedding and
the shared one have the same size — and all rows live in one storage: one row-sparse Adam, one
[R, T, D] aggregation over the rows where tasks meet (the shared rows).

Gates are task-private dense parameters (``private["gate.<task>.<entity>.W"]`` and ``.b``), initialised to
zero: every candidate starts with weight 1/K. A gate depends only on the entity, so
:meth:`StemModel.user_embeddings` / :meth:`StemModel.item_embeddings` compute the main task's vectors once
for every user / item and full ranking stays one matmul.

Storage order: the shared user table, the shared item table (drawn from the seed's generator exactly as
matrix factorisation draws its two tables), then for every task (main first) its user table, then its item
table. Tables are named ``user``, ``item`` (shared) and ``user.<task>``, ``item.<task>``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from recmtl.errors import RecmtlError
from recmtl.model.base import Embedded, entity_of
from recmtl.model.mf import TABLES, init_table

#: Rows whose vectors are computed at a time by :meth:`StemModel.vectors` (bounds the [rows, K, D] stack).
CHUNK_ROWS = 65536


@dataclass(frozen=True)
class StemLayout:
    """Which tables exist and who reads what: the tasks (name, entities it touches; main task first) and
    the three options of the module docstring."""

    tasks: tuple[tuple[str, tuple[str, ...]], ...]
    shared: bool = True
    stopgrad: bool = True
    asymmetric: bool = False

    @property
    def main(self) -> str:
        return self.tasks[0][0]

    def readers(self, entity: str) -> list[str]:
        """The tasks that touch ``entity``, in task order."""
        return [name for name, entities in self.tasks if entity in entities]

    @functools.cached_property
    def table_names(self) -> tuple[str, ...]:
        """Every table, in storage order."""
        shared = [e for e in TABLES if self.shared and self.readers(e)]
        own = [f"{e}.{name}" for name, entities in self.tasks for e in TABLES if e in entities]
        return (*shared, *own)

    def candidates(self, task: str, entity: str) -> list[str]:
        """The tables task ``task`` mixes for ``entity``: own, the others (task order), shared."""
        others = []
        if not self.asymmetric or task == self.main:
            others = [f"{entity}.{k}" for k in self.readers(entity) if k != task]
        return [f"{entity}.{task}", *others, *([entity] if self.shared else [])]

    def with_grad(self, task: str, table: str) -> bool:
        """Whether task ``task``'s loss reaches ``table`` (own and shared: yes; others: only without
        the stop-gradient)."""
        return table in (f"{entity_of(table)}.{task}", entity_of(table)) or not self.stopgrad


@dataclass
class StemModel:
    """Shared + task-specific embedding tables in one row storage, gates and task-private parameters."""

    weight: Tensor  # [N, D] every table's rows, in layout.table_names order
    n_users: int
    n_items: int
    layout: StemLayout
    private: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def create(
        cls, n_users: int, n_items: int, dim: int, how: str, std: float, seed: int, layout: StemLayout
    ) -> StemModel:
        gen = torch.Generator().manual_seed(seed)
        sizes = {"user": n_users, "item": n_items}
        tables = [init_table(sizes[entity_of(t)], dim, how, std, gen) for t in layout.table_names]
        model = cls(torch.cat(tables), n_users, n_items, layout)
        for task, entities in layout.tasks:
            for entity in entities:
                k = len(layout.candidates(task, entity))
                model.private[gate_key(task, entity, "W")] = torch.zeros(k, dim).requires_grad_(True)
                model.private[gate_key(task, entity, "b")] = torch.zeros(k).requires_grad_(True)
        return model

    def to(self, device: torch.device) -> StemModel:
        private = {k: v.detach().to(device).requires_grad_(True) for k, v in self.private.items()}
        return StemModel(self.weight.to(device), self.n_users, self.n_items, self.layout, private)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    @functools.cached_property
    def table_rows(self) -> dict[str, range]:
        """Table name -> its rows in ``weight``, in storage order."""
        sizes = {"user": self.n_users, "item": self.n_items}
        out: dict[str, range] = {}
        start = 0
        for name in self.layout.table_names:
            stop = start + sizes[entity_of(name)]
            out[name] = range(start, stop)
            start = stop
        return out

    @property
    def tables(self) -> dict[str, Tensor]:
        return {name: self.weight[span.start : span.stop] for name, span in self.table_rows.items()}

    # --- the forward pass ------------------------------------------------------------------------------

    def gate_weights(self, task: str, entity: str, gate_input: Tensor) -> Tensor:
        """Softmax gate [m, K] of task ``task`` for ``entity`` on ``gate_input`` [m, D] (own + shared)."""
        W, b = self.private[gate_key(task, entity, "W")], self.private[gate_key(task, entity, "b")]
        return torch.softmax(torch.addmm(b, gate_input, W.T), dim=-1)

    def mix(self, task: str, entity: str, candidates: list[Tensor]) -> Tensor:
        """h [m, D] from the candidate rows (each [m, D], in :meth:`StemLayout.candidates` order).

        The weighted sum is unrolled over the K candidates (no [m, K, D] stack: half the time of the
        stacked form, forward and backward)."""
        gate_input = candidates[0] + candidates[-1] if self.layout.shared else candidates[0]
        w = self.gate_weights(task, entity, gate_input)  # [m, K]
        h = w[:, :1] * candidates[0]
        for k in range(1, len(candidates)):
            h = h + w[:, k : k + 1] * candidates[k]
        return h

    def embed(self, task: str, ids: Mapping[str, Tensor]) -> Embedded:
        """Task ``task``'s vectors of the batch ``ids`` (entity -> [m]); the leaf gathers the rows its
        gradient reaches (own and shared; every candidate with ``stopgrad=False``); the other tasks' rows
        are read as constants."""
        spans = self.table_rows
        plan = {e: self.layout.candidates(task, e) for e in ids}
        grad_ids = [ids[e] + spans[t].start for e in ids for t in plan[e] if self.layout.with_grad(task, t)]
        rows = torch.cat(grad_ids)
        leaf = self.weight.index_select(0, rows).requires_grad_(True)
        parts = iter(torch.split(leaf, [x.numel() for x in grad_ids]))
        out: dict[str, Tensor] = {}
        for e, x in ids.items():
            cands = [
                next(parts) if self.layout.with_grad(task, t) else self._constant(x + spans[t].start)
                for t in plan[e]
            ]
            out[e] = self.mix(task, e, cands)
        return Embedded(rows, leaf, out)

    def _constant(self, rows: Tensor) -> Tensor:
        """Storage ``rows`` read as constants (stop-gradient)."""
        return self.weight.index_select(0, rows).detach()

    @torch.no_grad()
    def vectors(self, task: str, entity: str, ids: Tensor | None = None) -> Tensor:
        """[m, D] task ``task``'s vectors of ``entity`` ``ids`` (default: all), computed as :meth:`embed`
        computes them, without gradient, ``CHUNK_ROWS`` rows at a time."""
        spans = self.table_rows
        if ids is None:
            ids = torch.arange(len(spans[f"{entity}.{task}"]), device=self.weight.device)
        tables = self.layout.candidates(task, entity)
        chunks = []
        for start in range(0, ids.numel(), CHUNK_ROWS):
            x = ids[start : start + CHUNK_ROWS]
            cands = [self.weight.index_select(0, x + spans[t].start) for t in tables]
            chunks.append(self.mix(task, entity, cands))
        return torch.cat(chunks) if chunks else self.weight.new_zeros(0, self.dim)

    def user_embeddings(self) -> Tensor:
        """[U, D] the main task's user vectors (for ranking)."""
        return self.vectors(self.layout.main, "user")

    def item_embeddings(self) -> Tensor:
        """[I, D] the main task's item vectors (for ranking)."""
        return self.vectors(self.layout.main, "item")

    # --- checkpoints -----------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """``table.<name>`` for every table, ``private.<name>`` for the gates and task parameters."""
        out = {f"table.{k}": v.detach() for k, v in self.tables.items()}
        out |= {f"private.{k}": v.detach() for k, v in self.private.items()}
        return out

    @classmethod
    def from_state_tensors(cls, tensors: dict[str, Tensor], layout: StemLayout) -> StemModel:
        """The model a checkpoint holds, for ``layout`` (from the run's config); a RecmtlError naming what
        differs when the checkpoint's tables or gates are not ``layout``'s."""
        found = sorted(k.removeprefix("table.") for k in tensors if k.startswith("table."))
        if found != sorted(layout.table_names):
            raise RecmtlError(
                f"the checkpoint holds the tables {', '.join(found)}, but --encoder stem with these tasks "
                f"and options has {', '.join(layout.table_names)}"
            )
        dim = tensors[f"table.{layout.table_names[0]}"].shape[1]
        for task, entities in layout.tasks:
            for entity in entities:
                key = "private." + gate_key(task, entity, "W")
                expected = (len(layout.candidates(task, entity)), dim)
                if key not in tensors or tuple(tensors[key].shape) != expected:
                    shape = tuple(tensors[key].shape) if key in tensors else "missing"
                    raise RecmtlError(
                        f"the checkpoint's gate {key.removeprefix('private.')} is {shape}, but these STEM "
                        f"options need {expected}"
                    )
        weight = torch.cat([tensors[f"table.{name}"] for name in layout.table_names])
        private = {
            k.removeprefix("private."): v.clone().requires_grad_(True)
            for k, v in tensors.items()
            if k.startswith("private.")
        }
        n_users = tensors[f"table.user.{layout.main}"].shape[0]
        n_items = tensors[f"table.item.{layout.main}"].shape[0]
        return cls(weight, n_users, n_items, layout, private)


def gate_key(task: str, entity: str, param: str) -> str:
    """The private name of a gate parameter: ``gate.rec.user.W``."""
    return f"gate.{task}.{entity}.{param}"
