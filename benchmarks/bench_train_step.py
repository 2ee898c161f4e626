"""Training-step cost on Ciao (``--aux social,category``): recmtl's PMTRec step against

* recmtl's ``ew`` step with one summed backward (no per-task gradients) — target: PMTRec <= 1.2x;
* a dense per-task-backward reference, the way general multi-task libraries (LibMTL-style) train embedding
  models: every task back-propagated into the full user/item tables (``torch.autograd.grad`` per task),
  the dense gradients flattened into a [T, P] Jacobian, combined with PMTRec's weights computed on the
  flattened gradients (its pure formulas, not recmtl's aggregation machinery), and a dense
  ``torch.optim.Adam`` step — target: recmtl PMTRec >= 15x faster.

All three sample the same tasks with the same batch sizes; timings are medians over interleaved rounds
measured in one run.

``--methods all`` (or a list) then times every method in every mode it supports against the ``ew`` step,
in its own interleaved rounds with ``ew`` and with the dense reference combining the Jacobian with that
method (global form, its own ``weigh``): targets, at batch 2048, global gradient methods <= 2x and per-row
ones <= 2.5x the ``ew`` step. Stateful methods carry their state from step to step, as in training.

``--samplings independent,aligned`` (the PMTRec study, METHODS.md §4.5) instead times, for each
``--aux-sampling``, the ``ew`` step, the PMTRec step (``norm_source=step``) and the PMTRec step with
``norm_source=ema``, all in the same interleaved rounds, and prints PMTRec / EW per sampling (target <= 1.2x)
and ema / step per sampling (target <= 1.1x).

Usage: python benchmarks/bench_train_step.py [--data DIR] [--batch-sizes 512,2048] [--steps N] [--rounds R]
[--methods all|NAME,...] [--samplings independent,aligned] [--device cpu|cuda] (without --data, Ciao is
prepared from ../shared/data/ciao into a temporary directory; with --device cuda every step runs on the GPU,
recmtl's with the kernel back end that --fused-update auto picks, and timings wait for the GPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import append_results, print_machine  # noqa: E402

from recmtl.aggregators import AGGREGATORS, StepInfo, make_aggregator  # noqa: E402
from recmtl.aggregators.pmtrec import PMTRec, pmtrec_coefficients, pmtrec_task_weights  # noqa: E402
from recmtl.data.pipeline import prepare  # noqa: E402
from recmtl.data.recipes import load_recipe  # noqa: E402
from recmtl.data.store import open_dataset  # noqa: E402
from recmtl.data.tensors import TrainData  # noqa: E402
from recmtl.model.mf import MFModel  # noqa: E402
from recmtl.tasks import TaskOptions, build_tasks  # noqa: E402
from recmtl.train.config import TrainConfig  # noqa: E402
from recmtl.train.loop import build_training  # noqa: E402
from recmtl.train.step import train_step  # noqa: E402

PMTREC = PMTRec()  # the method's defaults, for the dense-Jacobian baseline

ROOT = Path(__file__).resolve().parents[1]


def recmtl_step(
    data: TrainData,
    aux: tuple[str, ...],
    method: str | dict,
    batch: int,
    mode: str = "row",
    sampling: str = "independent",
):
    """recmtl's own step, built exactly as `recmtl train` builds it (defaults: d 64, lr 1e-3, seed 0); the
    method's state is carried from step to step as in training. ``method``: a name or a [method] table."""
    config = TrainConfig(
        aux=aux, method=method, batch_size=batch, mode=mode, aux_sampling=sampling
    ).validate()
    device = data.train.a.device
    model, plan = build_training(config, data, device)
    sampler = torch.Generator(device=device).manual_seed(1)
    carried = {"state": plan.aggregator.init_state(plan.n_tasks, model.weight.shape[0], mode), "step": 0}

    def step() -> None:
        idx = torch.randint(len(data.train), (batch,), generator=sampler, device=sampler.device)
        out = train_step(
            model, plan, data.train.a[idx], data.train.b[idx], sampler, 3, carried["step"], carried["state"]
        )
        carried["state"], carried["step"] = out.state, carried["step"] + 1

    return step


def dense_reference_step(data: TrainData, aux: tuple[str, ...], batch: int, method: str | None = None):
    """Per-task backward into the full tables, flatten, PMTRec weights on the flat gradients (or, with
    ``method``, that method's global-mode ``weigh`` on the dense [1, T, P] Jacobian), dense Adam."""
    tasks = build_tasks(aux, data, TaskOptions(batch_size=batch))
    device = data.train.a.device
    init = MFModel.create(data.n_users, data.n_items, 64, "normal", 0.1, 0)
    users = torch.nn.Parameter(init.user_embeddings().clone().to(device))
    items = torch.nn.Parameter(init.item_embeddings().clone().to(device))
    gen = torch.Generator().manual_seed(0)
    private = {
        t.name: {k: torch.nn.Parameter(v.to(device)) for k, v in t.init_private(64, gen).items()}
        for t in tasks
    }
    shared = [users, items]
    params = shared + [p for d in private.values() for p in d.values()]
    opt = torch.optim.Adam(params, lr=1e-3)
    sampler = torch.Generator(device=device).manual_seed(1)
    tables = {"user": users, "item": items}
    aggregator = None if method is None else make_aggregator(method)
    carried = {
        "state": {} if aggregator is None else aggregator.init_state(len(tasks), 1, "global"),
        "step": 0,
    }

    def step() -> None:
        idx = torch.randint(len(data.train), (batch,), generator=sampler, device=device)
        rec_u, rec_i = data.train.a[idx], data.train.b[idx]
        losses = []
        for task in tasks:
            b = task.sample(sampler, rec_u, rec_i)
            rows = {name: tables[name][ids] for name, ids in b.ids.items()}
            losses.append(task.loss(rows, b, private[task.name]))
        jac = []
        opt.zero_grad(set_to_none=True)
        for t, loss in enumerate(losses):
            grads = torch.autograd.grad(
                loss, shared, retain_graph=True, allow_unused=True, materialize_grads=True
            )
            jac.append(torch.cat([g.reshape(-1) for g in grads]))  # dense: every row of both tables
            own = list(private[tasks[t].name].values())
            if own:
                for p, g in zip(
                    own, torch.autograd.grad(loss, own, retain_graph=t < len(losses) - 1), strict=True
                ):
                    p.grad = g
        jac_t = torch.stack(jac)  # [T, P]
        present = torch.ones(1, len(tasks), dtype=torch.bool, device=device)
        if aggregator is None:
            # PMTRec's weights on the flattened gradients (its pure formulas, defaults, epoch 3), then the
            # weighted sum of the T dense vectors, as a general multi-task library would compute them
            norms = torch.linalg.vector_norm(jac_t, dim=1).unsqueeze(0)  # [1, T]
            weights = pmtrec_task_weights(norms, present, 3, alpha=PMTREC.alpha, tau=PMTREC.tau)
            c = pmtrec_coefficients(weights, norms, PMTREC.combine)[0]
        else:  # the method's weights on the dense Jacobian, as a general library applies it
            losses = torch.stack([loss.detach() for loss in losses])
            info = StepInfo(epoch=3, step=carried["step"], mode="global", losses=losses, generator=sampler)
            out = aggregator(jac_t.unsqueeze(0), present, carried["state"], info)
            carried["state"], carried["step"] = out.state, carried["step"] + 1
            c = out.coefficients[0]
        flat = jac_t[0] * c[0]
        for t in range(1, len(tasks)):
            flat.add_(jac_t[t], alpha=float(c[t]))
        users.grad = flat[: users.numel()].view_as(users)
        items.grad = flat[users.numel() :].view_as(items)
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="prepared Ciao directory (default: prepare it now)")
    parser.add_argument("--aux", default="social,category")
    parser.add_argument("--batch-sizes", default="2048", help="comma-separated; one measurement each")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument(
        "--methods",
        default="",
        help="'all' or comma-separated names: time each method in each of its modes against ew (batch: the "
        "first of --batch-sizes)",
    )
    parser.add_argument(
        "--samplings",
        default="",
        help="comma-separated --aux-sampling values: time ew, pmtrec and pmtrec with norm_source=ema under "
        "each (batch: the first of --batch-sizes) instead of the main comparison",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda: every step (recmtl's with the kernel back end --fused-update auto picks, and the "
        "dense reference) runs there",
    )
    parser.add_argument(
        "--tuned-allocator",
        action="store_true",
        help="raise glibc's mmap/trim thresholds first, as `recmtl train` does (applies to all three steps)",
    )
    args = parser.parse_args()
    print_machine()
    if args.tuned_allocator:
        from cli._shell import tune_allocator

        print(f"glibc allocator tuned as in `recmtl train`: {tune_allocator()}")
    else:
        print("glibc allocator: default settings")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data
        if data_dir is None:
            recipe = load_recipe(ROOT / "datasets" / "ciao.toml")
            data_dir = Path(tmp) / "ciao"
            prepare(recipe.config({"raw": ROOT.parent / "shared" / "data" / "ciao"}), data_dir)
        data = TrainData.load(open_dataset(data_dir), torch.device(args.device))
    aux = tuple(a for a in args.aux.split(",") if a)
    print(f"data {data_dir.name}: users {data.n_users} items {data.n_items} · aux {args.aux} · {args.device}")
    if args.samplings:
        batch = int(args.batch_sizes.split(",")[0])
        rows = compare_samplings(data, aux, args.samplings.split(","), batch, args)
        rows = [row | {"data": data_dir.name, "aux": args.aux} for row in rows]
        print(f"appended to {append_results('sampling_step', rows)}")
        return
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        med, times = measure(data, aux, batch, args.steps, args.rounds)
        print(f"batch {batch}:")
        for name, value in med.items():
            print(
                f"  {name:<16} {value:9.2f} ms/step   (rounds: {', '.join(f'{x:.1f}' for x in times[name])})"
            )
        ratio_ew = med["pmtrec"] / med["ew"]
        speedup = med["dense_reference"] / med["pmtrec"]
        print(f"  PMTRec step / EW summed-backward step: {ratio_ew:.3f}x   (target <= 1.2x)")
        print(f"  dense per-task reference / PMTRec step: {speedup:.1f}x faster   (target >= 15x)")
        rows.append(
            {"data": data_dir.name, "aux": args.aux, "batch": batch, "tuned_allocator": args.tuned_allocator}
            | {f"{k}_ms": f"{v:.3f}" for k, v in med.items()}
            | {"pmtrec_over_ew": f"{ratio_ew:.4f}", "dense_over_pmtrec": f"{speedup:.2f}"}
        )
    print(f"appended to {append_results('train_step', rows)}")
    if args.methods:
        names = list(AGGREGATORS) if args.methods == "all" else args.methods.split(",")
        batch = int(args.batch_sizes.split(",")[0])
        rows = [
            row | {"data": data_dir.name, "aux": args.aux}
            for row in compare_methods(data, aux, names, batch, args)
        ]
        print(f"appended to {append_results('method_step', rows)}")


EMA = {"name": "pmtrec", "norm_source": "ema"}


def compare_samplings(
    data: TrainData, aux: tuple[str, ...], samplings: list[str], batch: int, args
) -> list[dict]:
    """ew, pmtrec and pmtrec with norm_source=ema under each aux sampling, all in the same interleaved
    rounds; prints a table with PMTRec / EW and ema / step per sampling and returns the CSV rows."""
    steps = {}
    for sampling in samplings:
        steps[f"ew/{sampling}"] = recmtl_step(data, aux, "ew", batch, sampling=sampling)
        steps[f"pmtrec/{sampling}"] = recmtl_step(data, aux, "pmtrec", batch, sampling=sampling)
        steps[f"pmtrec-ema/{sampling}"] = recmtl_step(data, aux, EMA, batch, sampling=sampling)
    med, times = measure_steps(steps, args.steps, args.rounds, slow=set())
    print(f"\nbatch {batch}, median ms/step over {args.rounds} interleaved rounds of {args.steps} steps")
    head = ("ew", "pmtrec", "pm-ema", "pmtrec/ew", "ema/step", "ema/ew")
    print(f"  {'sampling':<12} " + " ".join(f"{h:>9}" for h in head))
    rows = []
    for sampling in samplings:
        ew, pm, ema = (med[f"{k}/{sampling}"] for k in ("ew", "pmtrec", "pmtrec-ema"))
        flags = ("" if pm / ew <= 1.2 else "  pmtrec/ew over 1.2x") + (
            "" if ema / pm <= 1.1 else "  ema over 1.1x"
        )
        cells = [f"{v:9.2f}" for v in (ew, pm, ema)] + [f"{v:8.3f}x" for v in (pm / ew, ema / pm, ema / ew)]
        print(f"  {sampling:<12} " + " ".join(cells) + flags)
        rows.append(
            {
                "batch": batch,
                "sampling": sampling,
                "ew_ms": f"{ew:.3f}",
                "pmtrec_ms": f"{pm:.3f}",
                "pmtrec_ema_ms": f"{ema:.3f}",
                "pmtrec_over_ew": f"{pm / ew:.4f}",
                "ema_over_step": f"{ema / pm:.4f}",
                "rounds": args.rounds,
                "steps": args.steps,
            }
        )
    for name, values in times.items():
        print(f"  {name:<24} rounds: {', '.join(f'{x:.1f}' for x in values)}")
    return rows


FIXED = {"single", "ew"}  # one summed backward: nothing to compare against ew


def compare_methods(data: TrainData, aux: tuple[str, ...], names: list[str], batch: int, args) -> list[dict]:
    """For each method: its step in each of its modes, the ew step and the dense reference with that
    method, in interleaved rounds; prints one line per (method, mode) and returns the rows for the CSV."""
    print(f"\nper method, batch {batch} (median ms/step; ratio to the ew step measured in the same rounds)")
    print(
        f"  {'method':<11} {'mode':<7} {'ms/step':>8} {'ew ms':>7} {'x ew':>6} {'target':>7} {'dense ms':>9} "
        f"{'dense/it':>9}"
    )
    rows = []
    for name in names:
        if name in FIXED:
            continue
        cls = AGGREGATORS[name]
        steps = {f"{name}/{mode}": recmtl_step(data, aux, name, batch, mode) for mode in sorted(cls.modes)}
        steps |= {
            "ew": recmtl_step(data, aux, "ew", batch),
            "dense": dense_reference_step(data, aux, batch, name),
        }
        med, _ = measure_steps(steps, args.steps, args.rounds, slow={"dense"})
        for mode in sorted(cls.modes):
            ms = med[f"{name}/{mode}"]
            target = 2.5 if mode == "row" else 2.0
            ratio, speedup = ms / med["ew"], med["dense"] / ms
            flag = "" if ratio <= target else "  over target"
            print(
                f"  {name:<11} {mode:<7} {ms:8.2f} {med['ew']:7.2f} {ratio:5.2f}x {target:6.1f}x "
                f"{med['dense']:9.1f} {speedup:8.1f}x{flag}"
            )
            rows.append(
                {
                    "batch": batch,
                    "method": name,
                    "mode": mode,
                    "ms": f"{ms:.3f}",
                    "ew_ms": f"{med['ew']:.3f}",
                    "over_ew": f"{ratio:.3f}",
                    "target": target,
                    "dense_ms": f"{med['dense']:.3f}",
                    "dense_over_method": f"{speedup:.2f}",
                }
            )
    return rows


def measure(data: TrainData, aux: tuple[str, ...], batch: int, n_steps: int, rounds: int):
    """Median ms/step of the three steps over ``rounds`` interleaved rounds in rotating order (fewer dense
    steps)."""
    steps = {
        "pmtrec": recmtl_step(data, aux, "pmtrec", batch),
        "ew": recmtl_step(data, aux, "ew", batch),
        "dense_reference": dense_reference_step(data, aux, batch),
    }
    return measure_steps(steps, n_steps, rounds, slow={"dense_reference"})


def sync() -> None:
    """Wait for queued GPU work, so a timing covers it (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure_steps(steps: dict, n_steps: int, rounds: int, slow: set[str]):
    """Median ms/step of each of ``steps`` (name -> callable) over ``rounds`` interleaved rounds in rotating
    order; the ``slow`` ones run a tenth of the steps."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()  # warm-up
    names = list(steps)
    for r in range(rounds):
        # rotate the order every round: whichever step runs right after the dense reference meets cold
        # caches and a churned allocator, so a fixed order would bias the ratios
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = steps[name]
            n = max(1, n_steps // 10) if name in slow else n_steps
            sync()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1000 / n)
    return {k: statistics.median(v) for k, v in times.items()}, times


if __name__ == "__main__":
    main()
