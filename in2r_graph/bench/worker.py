"""Child process that trains one grid cell: ``python -m in2r_graph.bench.worker CELL_JSON``.

The runner starts one worker per cell, so each cell's peak memory is
measured on its own and a crash ends only that cell. ``CELL_JSON`` contains the
cell's configuration (``config``), the modules to import first (``imports``)
and the path of the result file to write (``result``). The result file contains
``status`` (``ok`` or ``failed``) and either the run summary or the error.
The exit status is 0 for ``ok`` and 1 otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import traceback
from pathlib import Path

# Spinning OpenMP threads slow training down several times on a shared CPU;
# the policy must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..config import Config, validate_config  # noqa: E402
from .grid import import_plugins  # noqa: E402

logger = logging.getLogger("in2r_graph.bench.worker")


def _write_result(path: Path, result: dict) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    os.replace(partial, path)


def run_cell(cell_file: str | Path) -> int:
    """Train the cell described by ``cell_file`` and write its result file; return the exit status."""
    from ..training.session import run_training

    cell = json.loads(Path(cell_file).read_text(encoding="utf-8"))
    result_path = Path(cell["result"])
    try:
        import_plugins(cell.get("imports", []))
        config = Config.from_dict(cell["config"], source=str(cell_file))
        validate_config(config)
        seed = config.train.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if config.train.num_threads:
            torch.set_num_threads(config.train.num_threads)
        summary = run_training(config)
    except Exception as error:  # every failure of a cell is recorded, then the grid goes on
        logger.error("cell failed:\n%s", traceback.format_exc())
        _write_result(result_path, {"status": "failed", "error": f"{type(error).__name__}: {error}"})
        return 1
    _write_result(result_path, {"status": "ok", "summary": summary})
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m in2r_graph.bench.worker CELL_JSON", file=sys.stderr)
        return 2
    package_logger = logging.getLogger("in2r_graph")
    package_logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    package_logger.addHandler(handler)
    return run_cell(argv[0])


if __name__ == "__main__":
    sys.exit(main())
