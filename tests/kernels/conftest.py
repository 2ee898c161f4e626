"""Kernel tests: the Triton kernels run compiled on a CUDA device when there is one, else on CPU tensors under
``TRITON_INTERPRET=1``.

The variable is set here, when pytest imports this file: before any test module of this folder is imported,
so before ``recmtl.kernels.triton_combine`` is (``triton.jit`` reads it when a kernel is defined). Should that
module already have been imported in this process without it, it is reloaded.
"""

from __future__ import annotations

import importlib
import os
import sys

import torch

from tests.threads import one_torch_thread  # noqa: F401  (autouse)

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
    if "recmtl.kernels.triton_combine" in sys.modules:
        importlib.reload(sys.modules["recmtl.kernels.triton_combine"])

#: Where the kernel tests run their kernels.
DEVICE = torch.device("cuda" if CUDA else "cpu")
