"""Run an ablation grid and print where its results went.

A script form of ``in2r-graph bench``, on the same runner:

    python benchmarks/ablation.py benchmarks/grids/smoke.yaml --out runs/bench-smoke

Rerunning with the same ``--out`` skips the cells that already finished.
"""

import argparse
import logging
import os
import sys

# Spinning OpenMP threads slow training down several times on a shared CPU;
# the policy must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from in2r_graph.bench import run_benchmark  # noqa: E402
from in2r_graph.config import ConfigError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="grid YAML file")
    parser.add_argument("--out", help="output folder (default: runs/bench-<grid file name>)")
    parser.add_argument("--data-root", help="folder that contains the dataset folders; overrides data.root of every cell")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    try:
        output = run_benchmark(args.grid, args.out, data_root=args.data_root)
    except ConfigError as error:
        print(f"ablation: error: {error}", file=sys.stderr)
        return 2
    run = output.run
    print(f"{len(run.cells)} cells: {run.ran} run now, {run.skipped} already finished, {run.failed} failed")
    print(f"results: {output.results_csv}")
    print(f"summary: {output.summary_md}")
    for path in output.plots:
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
