"""Run the evidence study (IN2R against its baselines on Flickr8k) and write its tables.

    python benchmarks/evidence.py                       # the whole study, resumable
    python benchmarks/evidence.py --quick               # 40 % caption noise, seed 0
    python benchmarks/evidence.py --noise caption:0.4 --seeds 0,1,2 --workers 2
    python benchmarks/evidence.py --report-only         # tables from what has finished

The study is the ablation grid ``benchmarks/grids/evidence_flickr8k.yaml``,
run by the same resumable runner as ``in2r-graph bench``: rerunning with the
same ``--out`` skips the finished runs, and a restricted call (``--noise``,
``--seeds``, ``--variants``, ``--quick``) shares its runs with the full one.
Every call ends by writing ``evidence.md`` (one table per noise setting,
recovery, the targets of the study) and ``rsum_vs_noise.png`` into ``--out``.

Recovery is ``(rSum - F) / (C - F)``, where C is the two-network contrastive
ensemble trained on clean pairs and F the same ensemble trained on the noisy
pairs of the row's setting, both at their best dev epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

# Spinning OpenMP threads slow training down several times on a shared CPU;
# the policy must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from in2r_graph.bench import expand_cells, load_grid, read_results, run_benchmark  # noqa: E402
from in2r_graph.bench.runner import metrics_from_summary  # noqa: E402
from in2r_graph.config import ConfigError  # noqa: E402

GRIDS = {
    "main": Path(__file__).resolve().parent / "grids" / "evidence_flickr8k.yaml",
    "regions": Path(__file__).resolve().parent / "grids" / "evidence_flickr8k_regions.yaml",
}
ENSEMBLE = "contrastive-ensemble"
IN2R_VARIANTS = ("in2r-attention", "in2r-gat", "in2r-attention-w0.1")
# Each baseline the best in2r variant must beat, and the variants that run it.
# When several of them ran, the report compares the one with the higher dev rSum.
RIVALS = {"co-divide": ("co-divide",), "nearest": ("nearest",), "mean": ("mean", "mean-w0.1")}
RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")


def parse_noise(text: str) -> list[tuple[str, float]]:
    """Parse ``caption:0.4,image:0.4`` into ``[("caption", 0.4), ("image", 0.4)]``."""
    settings = []
    for item in text.split(","):
        convention, _, ratio = item.strip().partition(":")
        try:
            value = float(ratio)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not CONVENTION:RATIO, e.g. caption:0.4") from None
        if convention not in ("caption", "image"):
            raise argparse.ArgumentTypeError(f"{item!r}: the convention is caption or image")
        settings.append((convention, value))
    return settings


def parse_list(text: str) -> list[str]:
    """Parse ``a,b`` into ``["a", "b"]``; an empty list is an error."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; expected values separated by commas")
    return items


def parse_seeds(text: str) -> list[int]:
    """Parse ``0,1`` into ``[0, 1]``."""
    try:
        return [int(item) for item in parse_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers such as 0,1,2") from None


def restricted_grid(
    path: Path,
    noise: list[tuple[str, float]] | None,
    seeds: list[int] | None,
    variants: list[str] | None,
    clean_ensemble_only: bool,
    folder: Path,
) -> Path:
    """Write into ``folder`` a copy of the grid that keeps only the requested cells; the cells keep their names.

    Raises:
        ConfigError: when a requested value is not in the study's grid.
    """
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    grid = document["grid"]
    exclude = list(document.get("exclude") or [])

    def keep(axis: str, requested: list) -> list:
        if axis not in grid:
            raise ConfigError(f"{path.name} does not vary {axis}; its axes are {list(grid)}")
        unknown = [value for value in requested if value not in grid[axis]]
        if unknown:
            raise ConfigError(f"{path.name}: {axis} {unknown} not in the study; it has {grid[axis]}")
        return [value for value in grid[axis] if value in requested]

    if seeds is not None:
        grid["seed"] = keep("seed", seeds)
    if variants is not None:
        grid["variant"] = keep("variant", variants)
    if noise is not None and "noise_convention" not in grid:
        # One convention for the whole study, set in its base settings.
        convention = document.get("base", {}).get("data.noise_convention", "caption")
        other = sorted({name for name, _ in noise} - {convention})
        if other:
            raise ConfigError(f"{path.name} uses {convention}-level noise only; got {other[0]} in --noise")
        grid["noise_ratio"] = keep("noise_ratio", [ratio for _, ratio in noise])
    elif noise is not None:
        grid["noise_convention"] = keep("noise_convention", [convention for convention, _ in noise])
        grid["noise_ratio"] = keep("noise_ratio", [ratio for _, ratio in noise])
        for convention in grid["noise_convention"]:
            unwanted = [ratio for ratio in grid["noise_ratio"] if (convention, ratio) not in noise]
            if unwanted:
                exclude.append({"noise_convention": convention, "noise_ratio": unwanted})
    if clean_ensemble_only:
        others = [name for name in grid["variant"] if name != ENSEMBLE]
        if others:
            exclude.append({"noise_ratio": 0.0, "variant": others})
    document["exclude"] = exclude
    if "overrides" in document:
        document["overrides"] = _restricted_overrides(document["overrides"], grid)
    restricted = folder / path.name
    restricted.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return restricted


def _restricted_overrides(entries: list[dict], grid: dict) -> list[dict]:
    """Return the override entries cut to the values still on the restricted axes, without entries left empty."""
    remaining = []
    for entry in entries:
        when = {}
        for axis, values in entry["when"].items():
            values = values if isinstance(values, list) else [values]
            when[axis] = [value for value in values if axis not in grid or value in grid[axis]]
        if all(when.values()):
            remaining.append({"when": when, "set": entry["set"]})
    return remaining


def load_rows(results_csv: Path) -> pd.DataFrame:
    """Return the finished rows, with ``split_auc`` filled in from the runs' summaries where missing."""
    frame = read_results(results_csv)
    if frame.empty:
        return frame
    frame = frame[frame["status"] == "ok"].copy()
    if "split_auc" not in frame:
        frame["split_auc"] = math.nan
    for index, row in frame.iterrows():
        if not pd.isna(row["split_auc"]):
            continue
        # The cell folder, not the run_dir column: older rows hold paths relative to the runner's working directory.
        summary_file = results_csv.parent / "cells" / str(row["cell_id"]) / "run" / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            frame.loc[index, "split_auc"] = metrics_from_summary(summary)["split_auc"]
    return frame


def current_rows(frame: pd.DataFrame, grid_path: Path, data_root: str | None) -> pd.DataFrame:
    """Keep the rows whose cell is in the study with the settings it has now; report the others."""
    if frame.empty:
        return frame
    hashes = {cell.cell_id: cell.config_hash for cell in expand_cells(load_grid(grid_path), data_root=data_root)}
    current = frame["cell_id"].map(hashes) == frame["config_hash"]
    if not current.all():
        print(
            f"evidence.py: left out {int((~current).sum())} finished run(s) whose cell is no longer in the study "
            "or whose settings changed since they ran",
            file=sys.stderr,
        )
    return frame[current]


def _mean_std(values: pd.Series, decimals: int = 1) -> str:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return "-"
    if len(numbers) == 1:
        return f"{numbers.iloc[0]:.{decimals}f}"
    return f"{numbers.mean():.{decimals}f} ± {numbers.std(ddof=1):.{decimals}f}"


def _mean(values: pd.Series) -> float:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return float(numbers.mean()) if len(numbers) else math.nan


def _spread(values: pd.Series) -> float:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return float(numbers.std(ddof=1)) if len(numbers) > 1 else math.nan


def _groups(frame: pd.DataFrame) -> dict[tuple[str, float], dict[str, pd.DataFrame]]:
    groups: dict[tuple[str, float], dict[str, pd.DataFrame]] = {}
    for (convention, ratio, variant), rows in frame.groupby(
        ["data.noise_convention", "data.noise_ratio", "grid.variant"], sort=False
    ):
        groups.setdefault((convention, float(ratio)), {})[variant] = rows
    return groups


def _recovery(rsum: float, floor: float, clean: float) -> float:
    if math.isnan(floor) or math.isnan(clean) or clean == floor:
        return math.nan
    return (rsum - floor) / (clean - floor)


def _format_recovery(recovery: float) -> str:
    # Adding 0.0 turns the -0.0 of a value that rounds to zero into 0.0, so "-0.00" is not printed.
    return "-" if math.isnan(recovery) else f"{round(recovery, 2) + 0.0:.2f}"


def evidence_markdown(frame: pd.DataFrame, variant_order: list[str]) -> str:
    """Return the study's tables and target checks as Markdown."""
    if frame.empty:
        return "No finished run yet.\n"
    groups = _groups(frame)
    clean_rows = groups.get(("caption", 0.0), {}).get(ENSEMBLE)
    clean = _mean(clean_rows["test_best_rsum"]) if clean_rows is not None else math.nan

    lines = []
    if not math.isnan(clean):
        lines.append(f"C (two-network contrastive ensemble, clean pairs): test rSum {_mean_std(clean_rows['test_best_rsum'])}.\n")
    header = (
        "| variant | runs | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | rSum (best dev) | rSum (last) "
        "| recovery | split P | split R | split AUC | text proto cos | image proto cos | wall min |"
    )
    order = {name: position for position, name in enumerate(variant_order)}

    for (convention, ratio) in sorted(groups, key=lambda key: (key[0] != "caption", key[1])):
        variants = groups[(convention, ratio)]
        floor_rows = variants.get(ENSEMBLE)
        floor = _mean(floor_rows["test_best_rsum"]) if floor_rows is not None else math.nan
        separator = "|" + "---|" * (header.count("|") - 1)
        lines += [f"### {convention}-level noise {100 * ratio:.0f} %\n", header, separator]
        for variant in sorted(variants, key=lambda name: order.get(name, len(order))):
            rows = variants[variant]
            recovery = _recovery(_mean(rows["test_best_rsum"]), floor, clean) if ratio > 0 else math.nan
            cells = [variant, str(len(rows))]
            cells += [_mean_std(rows[f"test_best_{key}"]) for key in RECALLS]
            cells += [_mean_std(rows["test_best_rsum"]), _mean_std(rows["test_last_rsum"])]
            cells += [_format_recovery(recovery)]
            cells += [_mean_std(rows[column], 3) for column in ("split_precision", "split_recall", "split_auc")]
            cells += [_mean_std(rows[column], 3) for column in ("text_prototype_fidelity", "image_prototype_fidelity")]
            cells += [_mean_std(pd.to_numeric(rows["wall_seconds"], errors="coerce") / 60, 1)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    lines += target_checks(groups, clean)
    return "\n".join(lines) + "\n"


def _best_on_dev(variants: dict[str, pd.DataFrame], names: list[str]) -> str:
    """Return the variant among ``names`` with the highest mean dev rSum."""
    return max(names, key=lambda name: _mean(variants[name]["best_dev_rsum"]))


def target_checks(groups: dict[tuple[str, float], dict[str, pd.DataFrame]], clean: float) -> list[str]:
    """Return one line per target of the study: measured value and met / not met / not measured."""
    lines = ["### Targets\n"]
    for ratio in [ratio for ratio in (0.4, 0.6) if ("caption", ratio) in groups]:
        variants = groups[("caption", ratio)]
        candidates = [name for name in IN2R_VARIANTS if name in variants]
        if not candidates:
            lines.append(f"- caption {100 * ratio:.0f} %: no in2r run yet.")
            continue
        # A variant with fewer finished seeds than another is not chosen, so that a lucky seed cannot decide.
        max_runs = max(len(variants[name]) for name in candidates)
        candidates = [name for name in candidates if len(variants[name]) == max_runs]
        best = _best_on_dev(variants, candidates)
        rsum = _mean(variants[best]["test_best_rsum"])
        floor = _mean(variants[ENSEMBLE]["test_best_rsum"]) if ENSEMBLE in variants else math.nan
        recovery = _recovery(rsum, floor, clean)
        if math.isnan(recovery):
            verdict = "not measured (C or F missing)"
        else:
            verdict = "met" if recovery >= 0.85 else "NOT met"
        share = "an unmeasured share" if math.isnan(recovery) else _format_recovery(recovery)
        lines.append(f"- caption {100 * ratio:.0f} %, {best} (chosen on dev) recovers {share} of C - F (target >= 0.85): {verdict}.")
        for names in RIVALS.values():
            present = [name for name in names if name in variants]
            if not present:
                continue
            rival = _best_on_dev(variants, present)
            gap = rsum - _mean(variants[rival]["test_best_rsum"])
            spreads = [_spread(variants[name]["test_best_rsum"]) for name in (best, rival)]
            spreads = [value for value in spreads if not math.isnan(value)]
            if spreads:
                spread = max(spreads)
                verdict = "met" if gap > spread else "NOT met"
                lines.append(f"  - against {rival}: {gap:+.1f} rSum, seed spread (larger std) {spread:.1f}: {verdict}.")
            else:
                lines.append(f"  - against {rival}: {gap:+.1f} rSum, seed spread unknown (one seed each).")
        if ratio == 0.4:
            drop = _mean(variants[best]["test_best_rsum"]) - _mean(variants[best]["test_last_rsum"])
            lines.append(
                f"  - last epoch vs best dev epoch: {-drop:+.1f} rSum (target: within 5): {'met' if abs(drop) <= 5 else 'NOT met'}."
            )
    return lines


def plot_rsum_vs_noise(frame: pd.DataFrame, variant_order: list[str], path: Path) -> Path | None:
    """Plot test rSum (best dev) against the caption noise rate, one line per variant; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if frame.empty:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for variant in [name for name in variant_order if name in set(frame["grid.variant"])]:
        rows = frame[frame["grid.variant"] == variant]
        caption = rows[rows["data.noise_convention"] == "caption"].groupby("data.noise_ratio")["test_best_rsum"]
        if len(caption):
            means, stds = caption.mean(), caption.std(ddof=1).fillna(0)
            line = axis.errorbar(100 * means.index, means.values, yerr=stds.values, marker="o", capsize=3, label=variant)
            colour = line[0].get_color()
        else:
            colour = None
        image = rows[rows["data.noise_convention"] == "image"].groupby("data.noise_ratio")["test_best_rsum"]
        if len(image):
            axis.scatter(100 * image.mean().index + 1, image.mean().values, marker="s", facecolors="none",
                         edgecolors=colour)
    levels = sorted(100 * frame["data.noise_ratio"].astype(float).unique())
    axis.set_xticks(levels)
    axis.set_xlim(min(levels) - 5, max(levels) + 5)
    axis.set_xlabel("caption noise rate (%); hollow squares: image-level noise")
    axis.set_ylabel("test rSum at the best dev epoch")
    axis.set_title("Flickr8k: test rSum against noise rate")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--study",
        choices=sorted(GRIDS),
        default="main",
        help="main: global features + MiniLM, every variant and noise setting; "
        "regions: region features + bi-GRU, 40 %% caption noise (default: main)",
    )
    parser.add_argument("--quick", action="store_true", help="40 %% caption noise, seed 0, plus C; about 30 min on 2 CPU cores")
    parser.add_argument("--noise", type=parse_noise, help="only these settings, e.g. caption:0.4,image:0.4")
    parser.add_argument("--seeds", type=parse_seeds, help="only these training seeds, e.g. 0,1")
    parser.add_argument("--variants", type=parse_list, help="only these variants, e.g. co-divide,in2r-attention")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at the same time (default: 1)")
    parser.add_argument("--report-only", action="store_true", help="write the tables from the finished runs; train nothing")
    parser.add_argument("--out", help="output folder (default: runs/evidence-flickr8k or runs/evidence-flickr8k-regions)")
    parser.add_argument("--data-root", help="folder that contains flickr8k_precomp (default: ../shared/data)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if args.workers < 1:
        parser.error(f"--workers {args.workers} is invalid; expected 1 or more")
    if args.report_only and (args.quick or args.noise or args.seeds or args.variants):
        parser.error("--report-only reports every finished run; drop --quick, --noise, --seeds and --variants")

    grid_path = GRIDS[args.study]
    study = yaml.safe_load(grid_path.read_text(encoding="utf-8"))
    variant_order = list(study["grid"]["variant"])
    out = Path(args.out or ("runs/evidence-flickr8k" if args.study == "main" else "runs/evidence-flickr8k-regions"))
    if not args.report_only:
        noise, seeds = args.noise, args.seeds
        if args.quick:
            if args.study == "main":
                noise = noise or [("caption", 0.4), ("caption", 0.0)]
            seeds = seeds or [0]
        restricted = noise is not None or seeds is not None or args.variants is not None
        # SIGTERM (timeout, a scheduler, kill) stops the running workers like Ctrl-C does.
        signal.signal(signal.SIGTERM, _stop)
        try:
            with tempfile.TemporaryDirectory(prefix="evidence-") as scratch:
                grid = grid_path
                if restricted:
                    grid = restricted_grid(grid_path, noise, seeds, args.variants, args.quick, Path(scratch))
                run_benchmark(grid, out, data_root=args.data_root, workers=args.workers)
        except ConfigError as error:
            print(f"evidence.py: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(
                f"evidence.py: stopped; the finished runs are in {out / 'results.csv'} and the same command resumes",
                file=sys.stderr,
            )
            return 130
    if not (out / "results.csv").is_file():
        print(f"evidence.py: error: {out / 'results.csv'} does not exist; run the study first", file=sys.stderr)
        return 2
    try:
        frame = current_rows(load_rows(out / "results.csv"), grid_path, args.data_root)
    except ConfigError as error:
        print(f"evidence.py: error: {error}", file=sys.stderr)
        return 2
    report = evidence_markdown(frame, variant_order)
    (out / "evidence.md").write_text(report, encoding="utf-8")
    plot = plot_rsum_vs_noise(frame, variant_order, out / "rsum_vs_noise.png")
    print(report)
    print(f"tables: {out / 'evidence.md'}" + (f"\nplot: {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
