"""Compile the row kernel ahead of time for sm_90, without a GPU (run by test_compile.py in a subprocess:
triton must be imported with TRITON_INTERPRET unset, or its own library functions are interpreted ones).

``python -m tests.kernels.compile_check`` prints one line per variant: its name, registers are not
reported (that needs the driver), ``spills`` when the PTX declares local memory.
"""

from __future__ import annotations

import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from recmtl.kernels import triton_combine

POINTERS = {"order": "*i64", "task_of": "*i64", "row_ptr": "*i64", "present": "*u8", "coef": "*fp32",
            "weights": "*fp32", "storage": "*fp32", "rows": "*i64"}  # fmt: skip
INTEGERS = {
    "stride_v",
    "stride_c",
    "stride_o",
    "stride_s0",
    "stride_s1",
    "n_rows",
    "n_tasks",
    "dim",
    "main_task",
}

#: The variants compiled: PMTRec fused with Adam on unsorted entries at T = 8 and d = 300 (two chunks, the
#: norms first, the logit reading), and the generic combination of bfloat16 slots grouped by row.
VARIANTS = {
    "pmtrec-adam-T8-d300-chunked": {"tasks": 8, "dim": 300, "dtype": "fp32", "order": True, "pmtrec": True,
                                    "adam": True, "logit": True},
    "combine-bf16-T2-d128": {"tasks": 2, "dim": 128, "dtype": "bf16", "order": False, "pmtrec": False,
                             "adam": False},
    "pmtrec-T4-d64": {"tasks": 4, "dim": 64, "dtype": "fp32", "order": True, "pmtrec": True, "adam": False},
}  # fmt: skip


def compile_variant(variant: dict) -> str:
    """The PTX of the kernel as the launcher would launch ``variant`` on an sm_90 GPU."""
    kernel = triton_combine._rows_kernel
    block_r, block_d, num_warps = triton_combine._blocks(variant["dim"], interpreting=False)
    t_pad = triton.next_power_of_2(variant["tasks"])
    logit = variant.get("logit", False)
    constexprs = {
        "HAS_ORDER": variant["order"],
        "PMTREC": variant["pmtrec"],
        "FOCUS_LOGIT": logit,
        "UNIT": not logit,
        "UNIFORM": False,
        "ADAM": variant["adam"],
        "T_PAD": t_pad,
        "E_STEP": min(t_pad, 4),
        "BLOCK_R": block_r,
        "BLOCK_D": block_d,
        "ONE_CHUNK": variant["dim"] <= block_d,
    }
    names = kernel.arg_names
    signature = {}
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ("values", "out"):
            signature[name] = f"*{variant['dtype']}"
        elif name in POINTERS:
            signature[name] = POINTERS[name]
        else:
            signature[name] = "i32" if name in INTEGERS else "fp32"
    source = ASTSource(
        fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()}
    )
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    return compiled.asm["ptx"]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        print("run with TRITON_INTERPRET unset", file=sys.stderr)
        return 2
    for name, variant in VARIANTS.items():
        ptx = compile_variant(variant)
        ok = ".entry _rows_kernel" in ptx
        print(
            name, "compiled" if ok else "no entry", "spills" if ".local" in ptx else "no spills", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
