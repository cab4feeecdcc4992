"""The ``in2r-graph bench`` command and the function behind it."""

from __future__ import annotations

import argparse
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from .grid import GridSpec, expand_cells, load_grid
from .report import write_plots, write_summary
from .runner import RESULTS_FILE, GridRun, describe_axes, run_grid

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkOutput:
    """A finished grid and the files written for it."""

    run: GridRun
    results_csv: Path
    summary_md: Path
    plots: list[Path]


def default_out_dir(grid_path: str | Path) -> Path:
    """Return ``runs/bench-<grid file stem>``, the output folder when none is given."""
    return Path("runs") / f"bench-{Path(grid_path).stem}"


def run_benchmark(
    grid: str | Path | GridSpec,
    out_dir: str | Path | None = None,
    *,
    data_root: str | Path | None = None,
    workers: int = 1,
) -> BenchmarkOutput:
    """Run a grid (resuming an earlier call on the same folder), then write the summary and the plots.

    Args:
        grid: a grid file or a parsed grid.
        out_dir: output folder; default ``runs/bench-<grid file stem>``.
        data_root: overrides ``data.root`` of every cell.
        workers: cells trained at the same time (see :func:`run_grid`).
    """
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec.path)
    run = run_grid(spec, out_dir, data_root=data_root, workers=workers)
    axes = list(spec.axes)
    summary = write_summary(run.results, axes, out_dir / "summary.md", title=f"Ablation grid {spec.path.name}")
    plots = write_plots(run.results, axes, out_dir / "plots")
    return BenchmarkOutput(run, out_dir / RESULTS_FILE, summary, plots)


def list_cells(spec: GridSpec, data_root: str | Path | None = None) -> str:
    """Return a listing of the grid's cells with their validity, for ``--dry-run``."""
    cells = expand_cells(spec, data_root=data_root)
    lines = [f"grid {spec.path}: {len(cells)} cells", describe_axes(spec)] if spec.axes else [f"grid {spec.path}: 1 cell"]
    for number, cell in enumerate(cells, start=1):
        state = "ok" if cell.error is None else f"invalid: {cell.error}"
        lines.append(f"{number:4d}  {cell.cell_id}  [{state}]")
    return "\n".join(lines)


def _interrupt_on_signal(signum, frame) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def run_bench_command(args: argparse.Namespace) -> int:
    """Run ``in2r-graph bench``; return 0 when the grid finished with at least one cell ok, 1 when every cell failed.

    SIGTERM (from ``timeout``, a job scheduler or ``kill``) is handled like
    Ctrl-C, so the running worker is stopped as well and the finished cells
    stay in ``results.csv`` for the next run.
    """
    spec = load_grid(args.grid)
    if args.dry_run:
        print(list_cells(spec, args.data_root))
        return 0
    previous = signal.signal(signal.SIGTERM, _interrupt_on_signal)
    try:
        output = run_benchmark(spec, args.out, data_root=args.data_root, workers=args.workers)
    finally:
        signal.signal(signal.SIGTERM, previous)
    run = output.run
    print(output.summary_md.read_text(encoding="utf-8"))
    print(
        f"{len(run.cells)} cells: {run.ran} run now, {run.skipped} already finished, {run.failed} failed.\n"
        f"results: {output.results_csv}\nsummary: {output.summary_md}\n"
        + "".join(f"plot: {path}\n" for path in output.plots)
    )
    if run.cells and run.failed == len(run.cells):
        logger.error("every cell of %s failed; see the errors in %s", spec.path, output.results_csv)
        return 1
    return 0
