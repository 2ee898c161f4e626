"""Sweeps: a matrix of training runs (methods × option grid × seeds) from one TOML file, run resumably.

:mod:`recmtl.sweeps.spec` reads the file into cells (a validated TrainConfig and a run directory each);
:mod:`recmtl.sweeps.runner` trains and evaluates them, skipping finished cells and resuming an interrupted
one.
"""

from recmtl.sweeps.spec import Cell, Sweep, load_sweep

__all__ = ["Cell", "Sweep", "load_sweep"]
