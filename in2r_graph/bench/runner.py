"""Run a grid's cells, one worker process each, into a resumable ``results.csv``.

Output folder layout::

    results.csv            one row per cell: settings, metrics, status, wall time, peak memory
    summary.md             mean ± std over seeds per setting (see ``report``)
    plots/*.png            rSum against k and noise rate, prototype fidelity
    cells/<cell_id>/       cell.json, worker.log, result.json and run/ (the run directory)

A rerun skips every cell whose row has status ``ok`` and the same
configuration hash. Failed cells, cells whose settings changed and new cells
run again. Several runners may share one folder (for example one per noise
rate): each merges its rows into ``results.csv`` under a lock, and a cell
that two of them would run is trained twice.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .._filelock import exclusive_lock
from ..evaluation.retrieval import METRIC_KEYS
from .grid import VARIANT_KEY, Cell, GridError, GridSpec, expand_cells, load_grid, short_name

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
RESULTS_LOCK_FILE = ".results.lock"

# Settings written to every row, whether or not the grid varies them.
SETTING_COLUMNS = (
    "train.method",
    "rectify.refiner",
    "rectify.k",
    "rectify.topology",
    "rectify.knn_edges",
    "rectify.edge_weights",
    "rectify.readout",
    "rectify.query_node",
    "rectify.num_layers",
    "data.dataset",
    "data.noise_ratio",
    "data.noise_file",
    "data.max_train_pairs",
    "model.embed_dim",
    "train.epochs",
    "train.seed",
)

# Rectification-probe metrics of the last epoch, averaged over the two networks.
PROBE_METRICS = (
    "text_prototype_fidelity",
    "text_given_fidelity",
    "image_prototype_fidelity",
    "image_given_fidelity",
    "text_neighbour_purity",
    "image_neighbour_purity",
)

STATUS_COLUMNS = ("cell_id", "cell", "status", "error", "config_hash")
RUN_COLUMNS = ("wall_seconds", "train_seconds", "peak_memory_mb", "run_dir", "finished")
ERROR_TEXT_LIMIT = 500


@dataclass
class GridRun:
    """Outcome of one :func:`run_grid` call.

    Attributes:
        out_dir: the output folder.
        cells: the grid's cells, in order.
        results: every row of ``results.csv`` for the grid's cells, in cell order.
        ran: number of cells run (or recorded as invalid) by this call.
        skipped: number of cells that had finished before this call.
    """

    out_dir: Path
    cells: list[Cell]
    results: pd.DataFrame
    ran: int
    skipped: int

    @property
    def failed(self) -> int:
        return int((self.results["status"] != "ok").sum()) if len(self.results) else 0


def metrics_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Flatten a run summary (``run_training``'s return value) into result columns."""
    row: dict[str, Any] = {}
    for name, metrics in summary.get("test", {}).items():
        prefix = "test_best" if name.startswith("best") else "test_last"
        for key in METRIC_KEYS:
            row[f"{prefix}_{key}"] = metrics.get(key, math.nan)
    row["best_dev_rsum"] = summary.get("best_dev_rsum", math.nan)
    row["best_epoch"] = summary.get("best_epoch", math.nan) + 1 if "best_epoch" in summary else math.nan
    split = summary.get("split") or {}
    row["split_precision"] = split.get("precision", math.nan)
    row["split_recall"] = split.get("recall", math.nan)
    last_record = summary.get("last_record") or {}
    aucs = [value for key, value in last_record.items() if key.endswith("/split_auc") and not math.isnan(value)]
    row["split_auc"] = float(np.mean(aucs)) if aucs else math.nan
    for metric in PROBE_METRICS:
        values = [value for key, value in last_record.items() if key.endswith(f"/{metric}")]
        row[metric] = float(np.mean(values)) if values else math.nan
    row["realised_noise"] = summary.get("realised_noise", math.nan)
    row["train_seconds"] = summary.get("seconds", math.nan)
    row["run_dir"] = summary.get("run_dir", "")
    return row


def _setting_values(cell: Cell, spec: GridSpec) -> dict[str, Any]:
    variant_keys = [key for overrides in spec.variants.values() for key in overrides]
    override_keys = [key for _, values in spec.overrides for key in values]
    keys = list(SETTING_COLUMNS) + [
        key
        for key in dict.fromkeys(list(spec.base) + variant_keys + override_keys + list(spec.axes))
        if key not in SETTING_COLUMNS
    ]
    values: dict[str, Any] = {}
    for key in keys:
        if key == VARIANT_KEY:
            values[key] = cell.settings.get(key, "")
        elif cell.config is not None:
            section, name = key.split(".")
            value = getattr(getattr(cell.config, section), name)
            values[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
        else:
            values[key] = cell.settings.get(key, spec.base.get(key, ""))
    return values


def read_results(path: Path) -> pd.DataFrame:
    """Read ``results.csv``; an absent file gives an empty table."""
    if not path.is_file():
        return pd.DataFrame(columns=list(STATUS_COLUMNS))
    text_columns = {column: str for column in STATUS_COLUMNS}
    try:
        frame = pd.read_csv(path, dtype=text_columns, keep_default_na=False, na_values=[""])
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise GridError(
            f"{path} is not a readable results table ({str(error).splitlines()[0]}); "
            "move it away to run the grid afresh"
        ) from None
    missing = [column for column in STATUS_COLUMNS if column not in frame.columns]
    if missing:
        raise GridError(
            f"{path} is not a results table written by the grid runner (no column {missing[0]!r}); "
            "move it away to run the grid afresh"
        )
    for column in STATUS_COLUMNS:
        frame[column] = frame[column].fillna("")
    return frame


def write_results(frame: pd.DataFrame, path: Path) -> None:
    """Write ``results.csv`` atomically, so an interrupted grid never leaves a truncated file."""
    partial = path.with_suffix(".csv.partial")
    frame.to_csv(partial, index=False)
    os.replace(partial, path)


@contextlib.contextmanager
def _results_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder's results while one runner reads, merges and writes them."""
    with exclusive_lock(out_dir / RESULTS_LOCK_FILE):
        yield


def _merge_row(frame: pd.DataFrame, row: dict[str, Any]) -> pd.DataFrame:
    other_rows = frame[frame["cell_id"] != row["cell_id"]]
    new_row = pd.DataFrame([row])
    merged = pd.concat([other_rows, new_row], ignore_index=True) if len(other_rows) else new_row
    ordered = [column for column in STATUS_COLUMNS if column in merged.columns]
    rest = [column for column in merged.columns if column not in ordered and column not in RUN_COLUMNS]
    tail = [column for column in RUN_COLUMNS if column in merged.columns]
    return merged[ordered + rest + tail]


def _is_finished(frame: pd.DataFrame, cell: Cell) -> bool:
    rows = frame[frame["cell_id"] == cell.cell_id]
    if rows.empty or rows.iloc[-1]["status"] != "ok":
        return False
    if rows.iloc[-1]["config_hash"] != cell.config_hash:
        logger.warning("cell %s: settings changed since its recorded run; running it again", cell.label)
        return False
    return True


def _peak_memory_mb(max_rss: int) -> float:
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    return max_rss / (1024 * 1024) if sys.platform == "darwin" else max_rss / 1024


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


class CellProcess:
    """One cell's training, running in a worker process.

    The worker's wall time and peak resident memory (``ru_maxrss`` from
    ``os.wait4``, so it covers exactly that process) are measured here.
    """

    def __init__(
        self,
        cell: Cell,
        cell_dir: Path,
        imports: list[str],
        timeout: float | None = None,
        threads: int | None = None,
    ) -> None:
        if cell_dir.exists():
            shutil.rmtree(cell_dir)
        cell_dir.mkdir(parents=True)
        config = copy.deepcopy(cell.config)
        # Absolute, so the run_dir column of results.csv works from any working directory.
        config.train.out_dir = str(cell_dir.resolve())
        config.train.run_name = "run"
        self.cell = cell
        self.timeout = timeout
        self.result_file = cell_dir / "result.json"
        self.log_path = cell_dir / "worker.log"
        cell_file = cell_dir / "cell.json"
        cell_file.write_text(
            json.dumps({"config": config.to_dict(), "imports": imports, "result": str(self.result_file)}, indent=2),
            encoding="utf-8",
        )
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if threads is not None:
            env.setdefault("OMP_NUM_THREADS", str(threads))
        self.started = time.monotonic()
        self.timed_out = False
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "in2r_graph.bench.worker", str(cell_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def poll(self) -> dict[str, Any] | None:
        """Return the cell's result columns once the worker has ended, else None."""
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if not pid:
            if self.timeout is not None and time.monotonic() - self.started > self.timeout and not self.timed_out:
                logger.error("cell %s: no result after %.0f s; stopping it", self.cell.label, self.timeout)
                self.process.kill()
                self.timed_out = True
            return None
        self.process.returncode = os.waitstatus_to_exitcode(status)
        return self._row(usage)

    def kill(self) -> None:
        """Stop the worker and reap it."""
        self.process.kill()
        self.process.wait()

    def _row(self, usage: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "wall_seconds": round(time.monotonic() - self.started, 2),
            "peak_memory_mb": round(_peak_memory_mb(usage.ru_maxrss), 1),
        }
        if self.result_file.is_file():
            result = json.loads(self.result_file.read_text(encoding="utf-8"))
        elif self.timed_out:
            result = {"status": "failed", "error": f"timed out after {self.timeout:.0f} s (cell_timeout); see {self.log_path}"}
        else:
            detail = _last_line(self.log_path)
            result = {
                "status": "failed",
                "error": f"worker ended without a result ({_describe_exit(self.process.returncode)}); last log line: "
                f"{detail!r}; see {self.log_path}",
            }
        row["status"] = result["status"]
        row["error"] = result.get("error", "")[:ERROR_TEXT_LIMIT]
        if result["status"] == "ok":
            row.update(metrics_from_summary(result["summary"]))
        return row


def _eta(seconds_per_cell: list[float], remaining: int, workers: int = 1) -> str:
    if not seconds_per_cell:
        return "unknown until a cell finishes"
    left = float(np.mean(seconds_per_cell)) * remaining / min(workers, max(1, remaining))
    return f"about {left / 60:.1f} min" if left >= 60 else f"about {left:.0f} s"


def run_grid(
    spec: GridSpec | str | Path,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    workers: int = 1,
) -> GridRun:
    """Run every unfinished cell of a grid and keep ``results.csv`` up to date after each one.

    Args:
        spec: a parsed grid or the path of a grid file.
        out_dir: output folder; created when missing, reused (resumed) when present.
        data_root: overrides ``data.root`` of every cell.
        workers: cells trained at the same time, each in its own process. On a
            CPU each worker gets ``cpu_count // workers`` threads unless
            ``OMP_NUM_THREADS`` is set; on one GPU, several small cells can
            share the device.

    Returns:
        A :class:`GridRun` with the rows of the grid's cells.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid; expected a whole number >= 1")
    if not isinstance(spec, GridSpec):
        spec = load_grid(spec)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GridError(f"output folder {out_dir} is a file; choose a folder with --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    cells = expand_cells(spec, data_root=data_root)
    frame = read_results(results_path)
    cell_ids = {cell.cell_id for cell in cells}
    stale = int((~frame["cell_id"].isin(cell_ids)).sum()) if len(frame) else 0
    if stale:
        logger.info("%s: %d row(s) belong to cells not in this grid; they are kept but not summarised", results_path, stale)

    pending = [cell for cell in cells if not _is_finished(frame, cell)]
    skipped = len(cells) - len(pending)
    invalid = sum(cell.error is not None for cell in pending)
    logger.info(
        "grid %s: %d cells, %d already finished, %d to run (%d invalid, %d at a time) -> %s",
        spec.path, len(cells), skipped, len(pending) - invalid, invalid, workers, out_dir,
    )
    order = {cell.cell_id: index for index, cell in enumerate(cells)}
    durations: list[float] = []
    started = time.monotonic()
    queue = list(pending)
    running: list[CellProcess] = []
    # Parallel workers share the cores instead of each starting one thread per core.
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    done = skipped

    def record(cell: Cell, result: dict[str, Any]) -> None:
        nonlocal frame, done
        row = {"cell_id": cell.cell_id, "cell": cell.label, "config_hash": cell.config_hash, **_setting_values(cell, spec)}
        row.update(result)
        row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        # Another runner may share the folder (one per noise rate, say): merge into the file as it is now.
        with _results_lock(out_dir):
            frame = _in_grid_order(_merge_row(read_results(results_path), row), order)
            write_results(frame, results_path)
        done += 1

    try:
        while queue or running:
            while queue and len(running) < workers:
                cell = queue.pop(0)
                number = order[cell.cell_id] + 1
                if cell.error is not None:
                    logger.warning("cell %d/%d (%s): invalid settings: %s", number, len(cells), cell.label, cell.error)
                    record(cell, {"status": "failed", "error": cell.error[:ERROR_TEXT_LIMIT]})
                    continue
                remaining = len(running) + sum(other.error is None for other in queue) + 1
                logger.info(
                    "cell %d/%d (%s): running; %d done, %.0f s elapsed, time left %s",
                    number, len(cells), cell.label, done, time.monotonic() - started,
                    _eta(durations, remaining, workers),
                )
                running.append(
                    CellProcess(cell, out_dir / "cells" / cell.cell_id, spec.imports, spec.cell_timeout, threads)
                )
            for job in list(running):
                row = job.poll()
                if row is None:
                    continue
                running.remove(job)
                cell, number = job.cell, order[job.cell.cell_id] + 1
                durations.append(row["wall_seconds"])
                if row["status"] == "ok":
                    logger.info(
                        "cell %d/%d (%s): ok, test rSum %.1f (best dev), %.0f s, peak %.0f MB",
                        number, len(cells), cell.label, row.get("test_best_rsum", math.nan),
                        row["wall_seconds"], row["peak_memory_mb"],
                    )
                else:
                    logger.error("cell %d/%d (%s): failed: %s", number, len(cells), cell.label, row["error"])
                record(cell, row)
            if running:
                time.sleep(0.2)
    except BaseException:
        for job in running:
            job.kill()
        raise

    current = frame[frame["cell_id"].isin(order)].reset_index(drop=True)
    return GridRun(out_dir, cells, current, ran=len(pending), skipped=skipped)


def _in_grid_order(frame: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    """Sort rows by the position of their cell in the grid; rows of other cells go last."""
    position = frame["cell_id"].map(order).fillna(len(order))
    return frame.assign(_position=position).sort_values("_position", kind="stable").drop(columns="_position")


def describe_axes(spec: GridSpec) -> str:
    """Return ``field: v1, v2`` per axis, one per line, for logs and dry runs."""
    return "\n".join(f"  {short_name(key)}: {', '.join(map(str, values))}" for key, values in spec.axes.items())
