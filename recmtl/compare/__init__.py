"""Comparing finished runs (`recmtl compare`): load run directories, group them by configuration minus
seed, summarise every metric over seeds, test each group against a baseline, and render tables and plots.

- :mod:`recmtl.compare.load` reads run directories and refuses runs that are not comparable;
- :mod:`recmtl.compare.groups` groups runs by their configuration minus seed and labels the groups;
- :mod:`recmtl.compare.stats` holds the pure statistics (paired tests, Holm's correction);
- :mod:`recmtl.compare.table` builds the comparison (:class:`Comparison`), the per-bucket breakdown;
- :mod:`recmtl.compare.report` renders it as Markdown, CSV and LaTeX text and writes the files;
- :mod:`recmtl.compare.plots` draws the PNG figures (matplotlib, Agg back end; imported on demand).

Nothing here prints.
"""

from recmtl.compare.groups import Group, group_runs
from recmtl.compare.load import Run, expand_run_dirs, load_runs
from recmtl.compare.table import Comparison, compare

__all__ = ["Comparison", "Group", "Run", "compare", "expand_run_dirs", "group_runs", "load_runs"]
