"""The evidence-study script: restricted grids, the report and its target checks."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from in2r_graph.bench import expand_cells, load_grid
from in2r_graph.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "evidence.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("evidence_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evidence = _load_script()


def _row(variant: str, ratio: float, seed: int, rsum: float, last: float | None = None) -> dict:
    row = {
        "cell_id": f"seed={seed},noise_convention=caption,noise_ratio={ratio},variant={variant}",
        "cell": variant,
        "status": "ok",
        "error": "",
        "config_hash": "x",
        "data.noise_convention": "caption",
        "data.noise_ratio": ratio,
        "grid.variant": variant,
        "train.seed": seed,
        "test_best_rsum": rsum,
        "test_last_rsum": rsum if last is None else last,
        "best_dev_rsum": rsum,
        "split_precision": 0.9,
        "split_recall": 0.95,
        "split_auc": 0.98,
        "text_prototype_fidelity": 0.6,
        "image_prototype_fidelity": 0.5,
        "wall_seconds": 60.0,
    }
    for key in evidence.RECALLS:
        row[f"test_best_{key}"] = rsum / 6
    return row


def _write_results(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _report(tmp_path: Path, rows: list[dict]) -> str:
    results = _write_results(tmp_path, rows)
    order = yaml.safe_load(evidence.GRIDS["main"].read_text())["grid"]["variant"]
    return evidence.evidence_markdown(evidence.load_rows(results), order)


def test_restricted_grid_keeps_cell_names(tmp_path):
    full = {cell.cell_id for cell in expand_cells(load_grid(evidence.GRIDS["main"]))}

    path = evidence.restricted_grid(
        evidence.GRIDS["main"], [("caption", 0.4), ("image", 0.4)], [1], ["co-divide"], False, tmp_path
    )
    cells = expand_cells(load_grid(path))

    assert [cell.cell_id for cell in cells] == [
        "seed=1,noise_convention=caption,noise_ratio=0.4,variant=co-divide",
        "seed=1,noise_convention=image,noise_ratio=0.4,variant=co-divide",
    ]
    assert {cell.cell_id for cell in cells} <= full


def test_split_settings_follow_noise_convention(tmp_path):
    full = {cell.cell_id: cell for cell in expand_cells(load_grid(evidence.GRIDS["main"]))}
    path = evidence.restricted_grid(
        evidence.GRIDS["main"], [("caption", 0.4), ("image", 0.4)], [1], ["contrastive", "co-divide"], False, tmp_path
    )

    cells = {cell.cell_id: cell for cell in expand_cells(load_grid(path))}

    for cell_id, cell in cells.items():
        assert cell.config_hash == full[cell_id].config_hash
    caption = cells["seed=1,noise_convention=caption,noise_ratio=0.4,variant=co-divide"].config.train
    assert (caption.warmup_epochs, caption.clean_threshold) == (2, 0.5)
    image = cells["seed=1,noise_convention=image,noise_ratio=0.4,variant=co-divide"].config.train
    assert (image.warmup_epochs, image.clean_threshold) == (1, 0.95)
    single = cells["seed=1,noise_convention=image,noise_ratio=0.4,variant=contrastive"].config.train
    assert (single.warmup_epochs, single.clean_threshold) == (2, 0.5)


def test_restricted_grid_drops_overrides_of_removed_values(tmp_path):
    path = evidence.restricted_grid(evidence.GRIDS["main"], [("caption", 0.4)], [0], ["co-divide"], False, tmp_path)

    spec = load_grid(path)

    assert spec.overrides == []


def test_quick_grid_runs_only_c_at_zero_noise(tmp_path):
    path = evidence.restricted_grid(evidence.GRIDS["main"], [("caption", 0.0)], [0], None, True, tmp_path)

    variants = [cell.settings["grid.variant"] for cell in expand_cells(load_grid(path))]

    assert variants == ["contrastive-ensemble"]


def test_restricted_grid_rejects_unknown_values(tmp_path):
    with pytest.raises(ConfigError, match=r"seed \[7\] not in the study"):
        evidence.restricted_grid(evidence.GRIDS["main"], None, [7], None, False, tmp_path)
    with pytest.raises(ConfigError, match="uses caption-level noise only"):
        evidence.restricted_grid(evidence.GRIDS["regions"], [("image", 0.4)], None, None, False, tmp_path)


def test_report_recovery_and_targets(tmp_path):
    rows = [
        _row("contrastive-ensemble", 0.0, 0, 270.0),
        _row("contrastive-ensemble", 0.4, 0, 230.0),
        _row("contrastive-ensemble", 0.4, 1, 232.0),
        _row("co-divide", 0.4, 0, 255.0),
        _row("co-divide", 0.4, 1, 257.0),
        _row("in2r-attention", 0.4, 0, 266.0, last=258.0),
        _row("in2r-attention", 0.4, 1, 266.0, last=259.0),
    ]

    report = _report(tmp_path, rows)

    # F = 231, C = 270: in2r recovers (266 - 231) / 39 = 0.90.
    assert "| in2r-attention | 2 |" in report
    assert "| 0.90 |" in report
    assert "recovers 0.90 of C - F (target >= 0.85): met." in report
    assert "against co-divide: +10.0 rSum, seed spread (larger std) 1.4: met." in report
    assert "last epoch vs best dev epoch: -7.5 rSum (target: within 5): NOT met." in report


def test_recovery_near_zero_prints_unsigned():
    assert evidence._format_recovery(-0.0004) == "0.00"
    assert evidence._format_recovery(-0.24) == "-0.24"
    assert evidence._format_recovery(float("nan")) == "-"


def test_mean_rival_picks_better_weight(tmp_path):
    rows = [
        _row("contrastive-ensemble", 0.0, 0, 270.0),
        _row("contrastive-ensemble", 0.4, 0, 230.0),
        _row("in2r-attention", 0.4, 0, 262.0),
        _row("mean", 0.4, 0, 255.0),
        _row("mean-w0.1", 0.4, 0, 259.0),
    ]

    report = _report(tmp_path, rows)

    assert "against mean-w0.1: +3.0 rSum" in report
    assert "against mean:" not in report


def test_best_variant_needs_every_seed(tmp_path):
    rows = [
        _row("contrastive-ensemble", 0.0, 0, 270.0),
        _row("contrastive-ensemble", 0.4, 0, 230.0),
        _row("in2r-attention", 0.4, 0, 262.0),
        _row("in2r-attention", 0.4, 1, 260.0),
        _row("in2r-gat", 0.4, 0, 265.0),
    ]

    report = _report(tmp_path, rows)

    assert "caption 40 %, in2r-attention (chosen on dev)" in report


def test_report_only_on_missing_results(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--report-only", "--out", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert "results.csv does not exist; run the study first" in result.stderr


def test_report_only_writes_tables_and_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    hashes = {cell.cell_id: cell.config_hash for cell in expand_cells(load_grid(evidence.GRIDS["main"]))}
    rows = [_row("contrastive-ensemble", 0.0, 0, 270.0), _row("co-divide", 0.4, 0, 255.0), _row("mean", 0.4, 0, 250.0)]
    for row in rows[:2]:
        row["config_hash"] = hashes[row["cell_id"]]
    _write_results(tmp_path, rows)

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--report-only", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO
    )

    assert result.returncode == 0, result.stderr
    report = (tmp_path / "evidence.md").read_text()
    assert "### caption-level noise 40 %" in report
    assert "| co-divide |" in report
    assert "| mean |" not in report
    assert "left out 1 finished run(s)" in result.stderr
    assert (tmp_path / "rsum_vs_noise.png").read_bytes()[:4] == b"\x89PNG"
