"""Ablation benchmark: run a grid of training runs and summarise them.

``in2r-graph bench --grid FILE`` and :func:`run_benchmark` expand a grid file
into cells, train each cell in its own process, keep a resumable
``results.csv`` and write ``summary.md`` and PNG plots.
"""

from .command import BenchmarkOutput, run_benchmark
from .grid import Cell, GridError, GridSpec, expand_cells, load_grid
from .report import summary_markdown, write_plots, write_summary
from .runner import GridRun, read_results, run_grid

__all__ = [
    "BenchmarkOutput",
    "Cell",
    "GridError",
    "GridRun",
    "GridSpec",
    "expand_cells",
    "load_grid",
    "read_results",
    "run_benchmark",
    "run_grid",
    "summary_markdown",
    "write_plots",
    "write_summary",
]
