"""Shared pieces of the performance benchmarks: arguments, timing, tables and JSON output.

Every benchmark script measures the two sides of each ratio in one process,
interleaved round by round, because the machine may be shared and noisy.
Absolute times are for information, and ratios are what the targets compare.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

DEFAULT_OUT = Path("runs") / "perf"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLICKR8K = REPO_ROOT.parent / "shared" / "data" / "flickr8k_precomp"


def parse_args(description: str, argv: list[str] | None = None, extra: Callable | None = None) -> argparse.Namespace:
    """Parse the options every benchmark takes; ``extra(parser)`` adds script-specific ones."""
    parser = argparse.ArgumentParser(description=description)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", dest="mode", const="quick", help="Smaller sizes and fewer repeats.")
    group.add_argument("--tiny", action="store_const", dest="mode", const="tiny", help="Seconds-long smoke run (CI).")
    parser.set_defaults(mode="full")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Folder that receives the JSON result.")
    parser.add_argument(
        "--flickr8k",
        type=Path,
        default=DEFAULT_FLICKR8K,
        help="Flickr8k precomp folder for the measurements on real features; skipped when absent.",
    )
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def set_threads() -> int:
    """Use OMP_NUM_THREADS threads (1 when unset) in torch and FAISS; return the count."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    import faiss

    faiss.omp_set_num_threads(threads)
    return threads


def pick(mode: str, tiny: Any, quick: Any, full: Any) -> Any:
    """Return the value of the current mode."""
    return {"tiny": tiny, "quick": quick, "full": full}[mode]


def time_once(fn: Callable[[], Any]) -> float:
    """Return the wall-clock seconds of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def time_side_by_side(
    functions: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, min_sample_ms: float = 20.0
) -> dict[str, dict[str, float]]:
    """Time several functions round by round, so that drift of the machine hits all of them alike.

    A function faster than ``min_sample_ms`` is called several times per
    sample and the sample is divided by the number of calls, which keeps
    timer and scheduler noise small against sub-millisecond calls.

    Returns:
        ``{name: {"ms": ..., "median_ms": ...}}`` per call over ``repeats``
        rounds, after ``warmup`` untimed rounds. ``ms`` is the fastest round:
        load from other processes only ever adds time, so the minimum is the
        steadiest estimate on a shared machine and the one ratios use.
    """
    calls: dict[str, int] = {}
    for name, fn in functions.items():
        seconds = time_once(fn)
        for _ in range(warmup - 1):
            seconds = min(seconds, time_once(fn))
        calls[name] = max(1, math.ceil(min_sample_ms / 1e3 / max(seconds, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            count = calls[name]
            samples[name].append(time_once(lambda: [fn() for _ in range(count)]) / count)
    return {
        name: {"ms": 1e3 * min(values), "median_ms": 1e3 * statistics.median(values)}
        for name, values in samples.items()
    }


def machine_info() -> dict[str, Any]:
    """Describe the machine and software that produced a result."""
    import faiss
    import torch_geometric

    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        if found:
            cpu = found.group(1).strip()
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "faiss": faiss.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def target(name: str, value: float, limit: float, *, at_least: bool, unit: str = "x") -> dict[str, Any]:
    """Return one target record: ``value`` compared with ``limit``."""
    met = value >= limit if at_least else value <= limit
    sign = ">=" if at_least else "<="
    return {"target": name, "value": round(value, 4), "limit": f"{sign} {limit}{unit}", "met": bool(met)}


def write_result(out: Path, name: str, mode: str, rows: list[dict], targets: list[dict], **extra: Any) -> Path:
    """Write ``<out>/<name>.json`` with the rows, the targets and the machine; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = {"benchmark": name, "mode": mode, "machine": machine_info(), "rows": rows, "targets": targets, **extra}
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    return path


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Format dict rows as an aligned plain-text table (floats with 3 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    cells = [[cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(value.rjust(width) for value, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def print_targets(targets: list[dict]) -> None:
    """Print each target with its measured value and whether it is met."""
    for item in targets:
        status = {True: "met", False: "MISSED", None: "(no limit)"}[item["met"]]
        print(f"target {item['target']}: {item['value']} (limit {item['limit']}) {status}")
