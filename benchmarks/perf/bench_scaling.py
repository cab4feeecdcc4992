"""Scaling: co-training epoch time of ``in2r`` against training-set size and against bank size.

The training set is the Flickr8k train split (or, without it, synthetic
features of the same shapes) repeated 1, 2 and 4 times, with the bank size
fixed at the 1x set's size. A second series keeps the 1x set and sets the
bank to a quarter, a half and all of its pairs. One epoch is ``Trainer._cotrain_epoch``: the
per-sample loss pass of both networks, the clean/noisy split and both
networks' training passes, with banks filled before the epoch so that
rectification runs from the first step. ``--quick`` and ``--tiny`` use the
first images of the split only.

The slopes are least-squares fits of log(epoch seconds) against log(size):
1 means time grows in proportion to the size.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

import common
import workloads


def loglog_slope(sizes: list[float], seconds: list[float]) -> float:
    """Return the least-squares slope of log(seconds) against log(sizes)."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def epoch_seconds(dataset: workloads.Dataset, overrides: list[str], run_dir: Path) -> dict:
    """Build an in2r trainer on ``dataset``, fill its banks and time one co-training epoch."""
    config = workloads.make_config(dataset, "in2r", overrides)
    trainer = workloads.build_trainer(config, run_dir)
    workloads.fill_bank(trainer)
    record: dict = {}
    seconds = common.time_once(lambda: record.update(trainer._cotrain_epoch(1)))
    labeled = [value for key, value in record.items() if key.endswith("labeled_fraction")]
    return {
        "pairs": trainer.train_data.num_pairs,
        "bank": trainer.networks[0].bank.capacity,
        "labeled_fraction": float(np.mean(labeled)) if labeled else math.nan,
        "epoch_s": seconds,
        "ms_per_pair": 1e3 * seconds / trainer.train_data.num_pairs,
    }


def make_dataset(args, times: int, base_images: int) -> workloads.Dataset:
    if args.flickr8k.is_dir():
        return workloads.repeated_dataset(args.flickr8k, times, base_images)
    return workloads.synthetic_dataset(base_images * times)


def size_series(args, base_images: int, overrides: list[str], run_dir: Path) -> list[dict]:
    """Time one epoch on the base set repeated 1, 2 and 4 times, with the bank of the 1x set."""
    rows = []
    for times in (1, 2, 4):
        dataset = make_dataset(args, times, base_images)
        try:
            bank = f"rectify.bank_size={5 * base_images}"
            row = epoch_seconds(dataset, overrides + [bank], run_dir / f"x{times}")
        finally:
            dataset.cleanup()
        rows.append({"series": "training-set size", "repeats": times, **row})
        print(common.format_table(rows[-1:]), flush=True)
    return rows


def bank_series(args, base_images: int, overrides: list[str], run_dir: Path) -> list[dict]:
    """Time one epoch on the 1x set with banks of a quarter, a half and all of its pairs."""
    rows = []
    dataset = make_dataset(args, 1, base_images)
    try:
        for fraction in (0.25, 0.5, 1.0):
            bank = max(64, int(5 * base_images * fraction))
            row = epoch_seconds(dataset, overrides + [f"rectify.bank_size={bank}"], run_dir / f"bank{bank}")
            rows.append({"series": "bank size", "repeats": 1, **row})
            print(common.format_table(rows[-1:]), flush=True)
    finally:
        dataset.cleanup()
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    common.set_threads()
    base_images = common.pick(args.mode, 100, 750, 6000)
    overrides = workloads.SETUPS["global+minilm"] + ["rectify.search_backend=auto"]
    with tempfile.TemporaryDirectory(prefix="in2r-perf-runs-") as run_dir:
        size_rows = size_series(args, base_images, overrides, Path(run_dir))
        bank_rows = bank_series(args, base_images, overrides, Path(run_dir))

    pairs, size_seconds = [row["pairs"] for row in size_rows], [row["epoch_s"] for row in size_rows]
    banks, bank_seconds = [row["bank"] for row in bank_rows], [row["epoch_s"] for row in bank_rows]
    size_slope = loglog_slope(pairs, size_seconds)
    bank_slope = loglog_slope(banks, bank_seconds)
    seconds_per_1000_bank = 1000 * float(np.polyfit(banks, bank_seconds, 1)[0])
    print()
    print(common.format_table(size_rows + bank_rows))
    print(f"epoch seconds per 1,000 more bank entries: {seconds_per_1000_bank:.3f}")

    targets = [
        {
            "target": "log-log slope of epoch time against training-set size",
            "value": round(size_slope, 3),
            "limit": "report only",
            "met": None,
        },
        {
            "target": "log-log slope of epoch time against bank size",
            "value": round(bank_slope, 3),
            "limit": "report only",
            "met": None,
        },
    ]
    print()
    common.print_targets(targets)
    path = common.write_result(
        args.out,
        "scaling",
        args.mode,
        size_rows + bank_rows,
        targets,
        size_slope=size_slope,
        bank_slope=bank_slope,
        seconds_per_1000_bank=seconds_per_1000_bank,
    )
    print(f"wrote {path}")
    return {"path": str(path), "targets": targets}


if __name__ == "__main__":
    main()
