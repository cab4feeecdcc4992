"""Run the evidence study (IN2R against its baselines on Flickr8k) and print the tables.

    python benchmarks/evidence.py [--quick] [--out runs/evidence-flickr8k] [--data-root ../shared/data]

The study is an ablation grid (``benchmarks/grids/evidence_flickr8k.yaml``)
run by the same resumable runner as ``in2r-graph bench``: rerunning with the
same ``--out`` skips the finished runs. ``--quick`` keeps 40 % caption noise
and seed 0 only. After the grid, it prints the recovery of each variant,
``(rSum - F) / (C - F)``, where C and F are the two-network contrastive
ensembles trained at 0 % noise and at the variant's noise, when both exist.
"""

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

# Spinning OpenMP threads slow training down several times on a shared CPU;
# the policy must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import yaml  # noqa: E402

from in2r_graph.bench import read_results, run_benchmark  # noqa: E402
from in2r_graph.config import ConfigError  # noqa: E402

GRID = Path(__file__).resolve().parent / "grids" / "evidence_flickr8k.yaml"


def quick_grid(path: Path) -> Path:
    """Write a copy of the grid restricted to 40 % caption noise and seed 0."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["grid"].update(seed=[0], noise_convention=["caption"], noise_ratio=[0.4, 0.0])
    document["grid"]["variant"] = [
        name for name in document["grid"]["variant"] if name != "contrastive-ensemble"
    ] + ["contrastive-ensemble"]
    document["exclude"] = [{"noise_ratio": 0.0, "variant": [v for v in document["variants"] if v != "contrastive-ensemble"]}]
    handle, name = tempfile.mkstemp(prefix="evidence-quick-", suffix=".yaml")
    os.close(handle)
    Path(name).write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return Path(name)


def recovery_table(results_csv: Path) -> str:
    """Return a Markdown table of test rSum (best dev) and recovery per variant and noise."""
    frame = read_results(results_csv)
    frame = frame[frame["status"] == "ok"]
    if frame.empty:
        return "no finished runs yet"
    keys = ["data.noise_convention", "data.noise_ratio", "grid.variant"]
    grouped = frame.groupby(keys)["test_rsum"].agg(["mean", "std", "count"]).reset_index()
    clean = grouped[(grouped["grid.variant"] == "contrastive-ensemble") & (grouped["data.noise_ratio"] == 0.0)]
    clean_rsum = float(clean["mean"].iloc[0]) if len(clean) else None
    lines = [
        "| noise | variant | runs | test rSum (best dev) | recovery |",
        "|---|---|---|---|---|",
    ]
    for _, row in grouped.iterrows():
        floor = grouped[
            (grouped["grid.variant"] == "contrastive-ensemble")
            & (grouped["data.noise_ratio"] == row["data.noise_ratio"])
            & (grouped["data.noise_convention"] == row["data.noise_convention"])
        ]
        recovery = "-"
        if clean_rsum is not None and len(floor) and row["data.noise_ratio"] > 0:
            floor_rsum = float(floor["mean"].iloc[0])
            if clean_rsum != floor_rsum:
                recovery = f"{(row['mean'] - floor_rsum) / (clean_rsum - floor_rsum):.2f}"
        spread = f" ± {row['std']:.1f}" if row["count"] > 1 else ""
        noise = f"{row['data.noise_convention']} {100 * row['data.noise_ratio']:.0f}%"
        lines.append(f"| {noise} | {row['grid.variant']} | {row['count']} | {row['mean']:.1f}{spread} | {recovery} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 %% caption noise and seed 0 only")
    parser.add_argument("--out", help="output folder (default: runs/evidence-flickr8k, or runs/evidence-flickr8k-quick)")
    parser.add_argument("--data-root", help="folder that contains flickr8k_precomp (default: ../shared/data)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    grid = quick_grid(GRID) if args.quick else GRID
    out = args.out or ("runs/evidence-flickr8k-quick" if args.quick else "runs/evidence-flickr8k")
    try:
        output = run_benchmark(grid, out, data_root=args.data_root)
    except ConfigError as error:
        print(f"evidence: error: {error}", file=sys.stderr)
        return 2
    print(recovery_table(output.results_csv))
    print(f"\nresults: {output.results_csv}\nsummary: {output.summary_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
