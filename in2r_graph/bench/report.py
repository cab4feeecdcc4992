"""Summaries of a grid's results: a Markdown table over seeds and PNG plots.

Both read the rows of ``results.csv`` (see ``runner``) and use only the rows
with status ``ok``. Runs that differ only in a seed key (``train.seed``,
``data.noise_seed``) form one setting, reported as mean ± sample standard
deviation over its runs (just the mean for a single run).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import pandas as pd

from ..config import SECTIONS
from .grid import short_name

logger = logging.getLogger(__name__)

SEED_KEYS = ("train.seed", "data.noise_seed")

# (column, header, decimals) of the summary table.
SUMMARY_METRICS = (
    ("test_best_rsum", "test rSum (best dev)", 1),
    ("test_last_rsum", "test rSum (last)", 1),
    ("best_dev_rsum", "dev rSum (best)", 1),
    ("test_best_i2t_r1", "i2t R@1", 1),
    ("test_best_t2i_r1", "t2i R@1", 1),
    ("split_precision", "split P", 3),
    ("split_recall", "split R", 3),
    ("split_auc", "split AUC", 3),
    ("text_prototype_fidelity", "text proto cos", 3),
    ("text_given_fidelity", "text given cos", 3),
    ("image_prototype_fidelity", "image proto cos", 3),
    ("image_given_fidelity", "image given cos", 3),
    ("text_neighbour_purity", "text purity", 3),
    ("image_neighbour_purity", "image purity", 3),
    ("wall_seconds", "wall s", 0),
    ("peak_memory_mb", "peak MB", 0),
)


def setting_keys(axes: list[str]) -> list[str]:
    """Return the axes that define a setting: every axis except the seed keys."""
    return [key for key in axes if key not in SEED_KEYS]


def _integer_settings(results: pd.DataFrame) -> pd.DataFrame:
    """Return a copy whose integer-typed setting columns hold integers.

    A blank cell (an invalid cell's unset value) makes pandas read the whole
    column as float, which would print ``k=3.0``.
    """
    frame = results.copy()
    for column in frame.columns:
        section, _, name = str(column).partition(".")
        if section in SECTIONS and get_type_hints(SECTIONS[section]).get(name) in (int, int | None):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def _ok_rows(results: pd.DataFrame) -> pd.DataFrame:
    if results.empty or "status" not in results:
        return results.iloc[0:0]
    return _integer_settings(results[results["status"] == "ok"])


def _format(values: pd.Series, decimals: int) -> str:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return "-"
    mean = numbers.mean()
    if len(numbers) < 2:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {numbers.std(ddof=1):.{decimals}f}"


def _cell_text(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _settings_of(group_key: Any, keys: list[str]) -> dict[str, Any]:
    if not keys:
        return {}
    values = group_key if isinstance(group_key, tuple) else (group_key,)
    return dict(zip(keys, values))


def aggregate(results: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Return one row per setting: the setting's values, ``runs`` and mean and std of each metric.

    Columns are the setting keys, ``runs``, and ``<metric>_mean`` and
    ``<metric>_std`` for every metric of :data:`SUMMARY_METRICS` present.
    """
    ok = _ok_rows(results)
    keys = setting_keys(axes)
    metrics = [column for column, _, _ in SUMMARY_METRICS if column in ok.columns]
    rows = []
    groups = ok.groupby(keys, sort=False, dropna=False) if keys else [((), ok)]
    for group_key, group in groups:
        if group.empty:
            continue
        row: dict[str, Any] = _settings_of(group_key, keys)
        row["runs"] = len(group)
        for column in metrics:
            numbers = pd.to_numeric(group[column], errors="coerce")
            row[f"{column}_mean"] = numbers.mean()
            row[f"{column}_std"] = numbers.std(ddof=1) if numbers.count() > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(results: pd.DataFrame, axes: list[str], title: str = "Ablation grid") -> str:
    """Return the Markdown summary: the table over seeds, the best setting on dev and the failed cells."""
    ok = _ok_rows(results)
    keys = setting_keys(axes)
    failed = results[results["status"] != "ok"] if not results.empty else results
    lines = [f"# {title}", ""]
    lines.append(
        f"{len(results)} cells: {len(ok)} finished, {len(failed)} failed. Values are mean ± sample standard "
        "deviation over the runs of a setting (seeds); `runs` counts them. Test recalls and rSum are measured "
        "on the checkpoint with the best dev rSum unless marked `last`. Fidelity columns are the cosine "
        "between the synthesised prototype (`proto`) or the given noisy partner (`given`) and the true "
        "partner, on truly-noisy training pairs, last epoch, mean of the two networks."
    )
    lines.append("")
    if ok.empty:
        lines.append("No cell finished.")
    else:
        metrics = [(column, header, decimals) for column, header, decimals in SUMMARY_METRICS if column in ok.columns]
        header = [short_name(key) for key in keys] + ["runs"] + [name for _, name, _ in metrics]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        groups = ok.groupby(keys, sort=False, dropna=False) if keys else [((), ok)]
        for group_key, group in groups:
            settings = _settings_of(group_key, keys)
            cells = [_cell_text(settings[key]) for key in keys] + [str(len(group))]
            cells += [_format(group[column], decimals) for column, _, decimals in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.extend(_best_on_dev(results, axes))
    if not failed.empty:
        lines += ["", "## Failed cells", "", "| cell | error |", "|---|---|"]
        for _, row in failed.iterrows():
            lines.append(f"| {_cell_text(row['cell'])} | {_cell_text(row['error'])} |")
    return "\n".join(lines) + "\n"


def _best_on_dev(results: pd.DataFrame, axes: list[str]) -> list[str]:
    table = aggregate(results, axes)
    if table.empty or "best_dev_rsum_mean" not in table or table["best_dev_rsum_mean"].isna().all():
        return []
    best = table.loc[table["best_dev_rsum_mean"].idxmax()]
    keys = setting_keys(axes)
    described = ", ".join(f"{short_name(key)}={best[key]}" for key in keys) or "the only setting"
    dev = _mean_std(best, "best_dev_rsum")
    test = _mean_std(best, "test_best_rsum")
    runs = int(best["runs"])
    return [f"Best setting on dev: {described} (dev rSum {dev}, test rSum {test}, {runs} run{'s' if runs != 1 else ''})."]


def _mean_std(row: pd.Series, column: str) -> str:
    mean = row.get(f"{column}_mean", math.nan)
    std = row.get(f"{column}_std", math.nan)
    if pd.isna(mean):
        return "-"
    return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ± {std:.1f}"


def write_summary(results: pd.DataFrame, axes: list[str], path: str | Path, title: str = "Ablation grid") -> Path:
    """Write :func:`summary_markdown` to ``path`` and return it."""
    path = Path(path)
    path.write_text(summary_markdown(results, axes, title), encoding="utf-8")
    return path


# ---------------------------------------------------------------------- plots


def _series_label(row: pd.Series, others: list[str]) -> str:
    """Name a curve by its refiner (or by the method, for runs without rectification) and the other settings."""
    method = row.get("train.method", "in2r")
    name = str(row.get("rectify.refiner", "")) if method == "in2r" else str(method)
    extra = [f"{short_name(key)}={row[key]}" for key in others if key in row and key != "rectify.refiner"]
    return ", ".join([name] + extra)


def _curves(ok: pd.DataFrame, x_key: str, axes: list[str], metric: str) -> dict[str, pd.DataFrame]:
    """Return label -> table of ``x``, ``mean``, ``std`` of ``metric`` over seeds, one curve per other setting."""
    # Settings that are constant over the finished runs add nothing to a curve's name.
    others = [key for key in setting_keys(axes) if key != x_key and ok[key].nunique(dropna=False) > 1]
    frame = ok.copy()
    frame["_label"] = frame.apply(lambda row: _series_label(row, others), axis=1)
    frame["_x"] = pd.to_numeric(frame[x_key], errors="coerce")
    frame["_y"] = pd.to_numeric(frame[metric], errors="coerce")
    curves = {}
    for label, group in frame.groupby("_label", sort=False):
        stats = group.groupby("_x")["_y"].agg(["mean", "std", "count"]).reset_index().sort_values("_x")
        curves[label] = stats.rename(columns={"_x": "x"})
    return curves


def _plot_against(ok: pd.DataFrame, axes: list[str], x_key: str, x_label: str, x_scale: float, title: str, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("test_best_rsum", "checkpoint with the best dev rSum"), ("test_last_rsum", "last epoch")]
    figure, axes_list = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    markers = "osD^vP*Xh<>"
    ticks = sorted(pd.to_numeric(ok[x_key], errors="coerce").dropna().unique() * x_scale)
    for axis, (metric, panel_title) in zip(axes_list, panels):
        for index, (label, stats) in enumerate(_curves(ok, x_key, axes, metric).items()):
            axis.errorbar(
                stats["x"] * x_scale, stats["mean"], yerr=stats["std"].fillna(0.0), label=label,
                marker=markers[index % len(markers)], capsize=3, linewidth=1.5,
            )
        axis.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
        axis.set_title(panel_title)
        axis.set_xlabel(x_label)
        axis.grid(alpha=0.3)
    axes_list[0].set_ylabel("test rSum (mean ± std over seeds)")
    handles, labels = axes_list[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
    if len(ticks) == 1:
        title += " (this grid has a single value)"
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def _plot_fidelity(ok: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        ("text_prototype_fidelity", "caption prototype"),
        ("text_given_fidelity", "given caption"),
        ("image_prototype_fidelity", "image prototype"),
        ("image_given_fidelity", "given image"),
    ]
    frame = ok[ok["train.method"] == "in2r"] if "train.method" in ok else ok
    refiners = list(dict.fromkeys(frame["rectify.refiner"].astype(str)))
    figure, axis = plt.subplots(figsize=(max(6.0, 1.3 * len(refiners) + 2), 4.5))
    width = 0.8 / len(bars)
    positions = np.arange(len(refiners))
    colours = ["tab:blue", "lightsteelblue", "tab:orange", "navajowhite"]
    for index, ((column, label), colour) in enumerate(zip(bars, colours)):
        if column not in frame:
            continue
        values = frame.assign(_y=pd.to_numeric(frame[column], errors="coerce")).groupby(
            frame["rectify.refiner"].astype(str)
        )["_y"]
        means = values.mean().reindex(refiners)
        stds = values.std(ddof=1).reindex(refiners).fillna(0.0)
        axis.bar(positions + (index - 1.5) * width, means, width, yerr=stds, capsize=2, label=label, color=colour)
    axis.set_xticks(positions, refiners)
    axis.set_ylabel("cosine to the true partner")
    axis.set_title(
        "Prototype fidelity on truly-noisy training pairs\n(last epoch, mean ± std over all runs of a refiner)",
        fontsize="medium",
    )
    axis.legend(fontsize="small", ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def write_plots(results: pd.DataFrame, axes: list[str], out_dir: str | Path) -> list[Path]:
    """Write the PNG plots of the finished runs into ``out_dir`` and return their paths.

    - ``rsum_vs_k.png``: test rSum against ``rectify.k``, one curve per refiner
      (and per value of the other varied settings);
    - ``rsum_vs_noise.png``: the same against ``data.noise_ratio`` (in %);
    - ``prototype_fidelity.png``: prototype and given-partner cosine per refiner.

    A plot whose data is missing (no finished run, or no IN2R run for the
    fidelity plot) is not written, and none is written without matplotlib.
    """
    written: list[Path] = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning("matplotlib is not installed, so no plots were written; install the 'plots' extra")
        return written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = _ok_rows(results)
    if ok.empty:
        logger.warning("no finished cell; no plots written")
        return written
    if "rectify.k" in ok:
        written.append(
            _plot_against(ok, axes, "rectify.k", "k (neighbours per query)", 1.0, "Test rSum against k",
                          out_dir / "rsum_vs_k.png")
        )
    if "data.noise_ratio" in ok:
        written.append(
            _plot_against(ok, axes, "data.noise_ratio", "noise rate (%)", 100.0, "Test rSum against noise rate",
                          out_dir / "rsum_vs_noise.png")
        )
    fidelity = pd.to_numeric(ok.get("text_prototype_fidelity", pd.Series(dtype=float)), errors="coerce")
    if "rectify.refiner" in ok and fidelity.notna().any():
        written.append(_plot_fidelity(ok[fidelity.notna()], out_dir / "prototype_fidelity.png"))
    return written
