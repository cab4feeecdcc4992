"""Ablation grids: parsing, expansion, resumable runs, summary and plots."""

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from in2r_graph.bench import GridError, expand_cells, load_grid, read_results, run_benchmark, summary_markdown, write_plots
from in2r_graph.bench.report import aggregate
from in2r_graph.cli.main import main

REPO = Path(__file__).resolve().parents[1]
SMOKE_GRID = REPO / "benchmarks" / "grids" / "smoke.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY_BASE = {
    "data.max_train_pairs": 120,
    "model.embed_dim": 16,
    "train.epochs": 2,
    "train.warmup_epochs": 1,
    "train.batch_size": 32,
    "rectify.k": 3,
}


def _write_grid(tmp_path: Path, document: dict, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------- parsing and expansion


def test_grid_cells_are_cartesian_product(tmp_path):
    path = _write_grid(tmp_path, {"base": {"train.epochs": 2}, "grid": {"refiner": ["gat", "mean"], "k": [3, 5, 8]}})
    cells = expand_cells(load_grid(path))
    assert len(cells) == 6
    assert [cell.settings for cell in cells[:2]] == [
        {"rectify.refiner": "gat", "rectify.k": 3},
        {"rectify.refiner": "gat", "rectify.k": 5},
    ]
    assert cells[0].cell_id == "refiner=gat,k=3"
    assert cells[0].label == "refiner=gat, k=3"
    assert cells[5].config.rectify.k == 8
    assert cells[5].config.train.epochs == 2
    assert all(cell.error is None for cell in cells)


def test_grid_accepts_nested_base_sections(tmp_path):
    path = _write_grid(tmp_path, {"base": {"train": {"epochs": 4}, "rectify.k": 2}, "grid": {"seed": [0, 1]}})
    spec = load_grid(path)
    assert spec.base == {"train.epochs": 4, "rectify.k": 2}
    assert list(spec.axes) == ["train.seed"]


def test_grid_without_axes_is_one_cell(tmp_path):
    cells = expand_cells(load_grid(_write_grid(tmp_path, {"base": {"rectify.k": 4}})))
    assert len(cells) == 1
    assert cells[0].cell_id == "base"


def test_invalid_combinations_become_failed_cells(tmp_path):
    path = _write_grid(
        tmp_path,
        {"grid": {"topology": ["complete", "star"], "refiner": ["gat", "sage"], "edge_weights": ["none", "partner"]}},
    )
    cells = {cell.cell_id: cell for cell in expand_cells(load_grid(path))}
    assert len(cells) == 8
    star = cells["topology=star,refiner=gat,edge_weights=none"]
    assert star.config is None
    assert "needs rectify.query_node=true" in star.error
    weighted_sage = cells["topology=complete,refiner=sage,edge_weights=partner"]
    assert "cannot use edge weights" in weighted_sage.error
    assert cells["topology=complete,refiner=gat,edge_weights=partner"].error is None


def test_exclude_drops_matching_cells(tmp_path):
    path = _write_grid(
        tmp_path,
        {
            "grid": {"refiner": ["gat", "nearest"], "k": [1, 5, 10]},
            "exclude": [{"refiner": "nearest", "k": [5, 10]}],
        },
    )
    ids = [cell.cell_id for cell in expand_cells(load_grid(path))]
    assert ids == ["refiner=gat,k=1", "refiner=gat,k=5", "refiner=gat,k=10", "refiner=nearest,k=1"]


def test_overrides_apply_to_matching_cells_only(tmp_path):
    path = _write_grid(
        tmp_path,
        {
            "base": {"train.warmup_epochs": 2},
            "variants": {"plain": {"train.method": "contrastive"}, "split": {"train.method": "co-divide"}},
            "grid": {"noise_convention": ["caption", "image"], "variant": ["plain", "split"]},
            "overrides": [{"when": {"noise_convention": "image", "variant": ["split"]}, "set": {"warmup_epochs": 1}}],
        },
    )
    cells = {cell.cell_id: cell for cell in expand_cells(load_grid(path))}
    warmups = {cell_id: cell.config.train.warmup_epochs for cell_id, cell in cells.items()}
    assert warmups == {
        "noise_convention=caption,variant=plain": 2,
        "noise_convention=caption,variant=split": 2,
        "noise_convention=image,variant=plain": 2,
        "noise_convention=image,variant=split": 1,
    }
    plain = expand_cells(load_grid(_write_grid(tmp_path, {"base": {"train.warmup_epochs": 2}}, "plain.yaml")))[0]
    assert cells["noise_convention=caption,variant=plain"].config_hash != plain.config_hash


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"when": {"k": 3}, "set": {"lr": 0.1}}, "overrides must be a list"),
        ([{"when": {"k": 3}}], r"exactly the keys when and set \(missing set\)"),
        ([{"when": {"k": 3}, "sets": {"lr": 0.1}}], r"missing set; unknown sets"),
        ([{"when": {"k": 4}, "set": {"lr": 0.1}}], r"when.k lists \[4\], which the k axis \[3, 5\] does not have"),
        ([{"when": {"k": "many"}, "set": {"lr": 0.1}}], "when.k='many' is invalid"),
        ([{"when": {"k": 3}, "set": {"variant": "b"}}], "names variant, which is a grid axis"),
        ([{"when": {"k": 3}, "set": {"noise_file": "n.npy"}}], "a noise file fixes the noise"),
        ([{"when": {}, "set": {"lr": 0.1}}], "when is empty"),
        ([{"when": {"seed": 0}, "set": {"lr": 0.1}}], r"names \['seed'\], which the grid does not vary"),
        ([{"when": {"k": 3}, "set": {}}], "set is empty"),
        ([{"when": {"k": 3}, "set": {"k": 5}}], "changes the grid axis rectify.k"),
        ([{"when": {"k": 3}, "set": {"rate": 0.1}}], "unknown config key 'rate'"),
    ],
)
def test_invalid_overrides_rejected(tmp_path, overrides, message):
    path = _write_grid(tmp_path, {"grid": {"k": [3, 5], "noise_ratio": [0.2]}, "overrides": overrides})
    with pytest.raises(GridError, match=message):
        load_grid(path)


def test_overrides_match_quoted_axis_values(tmp_path):
    path = _write_grid(tmp_path, {"grid": {"k": ["3", "8"]}, "overrides": [{"when": {"k": 3}, "set": {"lr": 0.1}}]})

    lrs = [cell.config.train.lr for cell in expand_cells(load_grid(path))]

    assert lrs == [0.1, 0.0005]


@pytest.mark.parametrize("when", [{"variant": "typo"}, {"variant": ["b", "typo"]}, {"variant": None}])
def test_overrides_reject_unknown_or_empty_variant(tmp_path, when):
    document = {
        "variants": {"a": {"lr": 0.1}, "b": {"lr": 0.2}},
        "grid": {"variant": ["a", "b"]},
        "overrides": [{"when": when, "set": {"k": 4}}],
    }
    with pytest.raises(GridError, match="typo|variant is empty"):
        load_grid(_write_grid(tmp_path, document))


def test_config_hash_ignores_output_settings(tmp_path):
    first = expand_cells(load_grid(_write_grid(tmp_path, {"base": {"train.out_dir": "a"}}, "a.yaml")))[0]
    second = expand_cells(load_grid(_write_grid(tmp_path, {"base": {"train.out_dir": "b"}}, "b.yaml")))[0]
    changed = expand_cells(load_grid(_write_grid(tmp_path, {"base": {"rectify.k": 7}}, "c.yaml")))[0]
    assert first.config_hash == second.config_hash
    assert first.config_hash != changed.config_hash


def test_relative_paths_resolved_from_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write_grid(tmp_path, {"base": {"data.root": "datasets"}})
    cell = expand_cells(load_grid(path), data_root=None)[0]
    assert cell.config.data.root == str(tmp_path / "datasets")


def test_data_root_override(tmp_path):
    path = _write_grid(tmp_path, {"base": {"data.root": "/elsewhere"}, "grid": {"k": [3]}})
    cell = expand_cells(load_grid(path), data_root=tmp_path)[0]
    assert cell.config.data.root == str(tmp_path)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"grid": {"k": 5}}, "must be a list of values"),
        ({"grid": {"k": []}}, "empty list"),
        ({"grid": {"neighbours": [5]}}, "unknown config key 'neighbours'"),
        ({"base": {"k": 3}, "grid": {"k": [5]}}, "set in both base and grid"),
        ({"grid": {"k": [3]}, "cells": []}, "unknown top-level key"),
        ({"grid": {"out_dir": ["a", "b"]}}, "cannot be a grid axis"),
        ({"base": {"noise_file": "n.npy"}, "grid": {"noise_ratio": [0.2, 0.4]}}, "a noise file fixes the noise"),
        ({"grid": {"k": [3]}, "exclude": [{}]}, "would drop every cell"),
        ({"grid": {"k": [3]}, "cell_timeout": -1}, "cell_timeout=-1 is invalid"),
        ({"grid": {"k": [3]}, "imports": "my_refiners"}, "imports must be a list"),
        (["k", 3], "expected a mapping"),
    ],
)
def test_invalid_grid_rejected(tmp_path, document, message):
    path = _write_grid(tmp_path, document)
    with pytest.raises(GridError, match=message):
        load_grid(path)


def test_missing_grid_file(tmp_path):
    with pytest.raises(GridError, match="grid file not found"):
        load_grid(tmp_path / "absent.yaml")


def _write_plugin(tmp_path: Path) -> Path:
    plugin = tmp_path / "my_refiners.py"
    plugin.write_text(
        "from torch_geometric.nn import GraphConv\n"
        "from in2r_graph.refiners import Refiner, register_refiner\n\n\n"
        "@register_refiner('bench-test-graphconv')\n"
        "class GraphConvRefiner(Refiner):\n"
        "    def build_layer(self):\n"
        "        return GraphConv(self.hidden_dim, self.hidden_dim)\n",
        encoding="utf-8",
    )
    return plugin


def test_grid_imports_register_refiners(tmp_path):
    plugin = _write_plugin(tmp_path)
    path = _write_grid(tmp_path, {"imports": [str(plugin)], "grid": {"refiner": ["bench-test-graphconv"]}})
    cells = expand_cells(load_grid(path))
    assert cells[0].error is None


def test_grid_import_missing_file(tmp_path):
    path = _write_grid(tmp_path, {"imports": [str(tmp_path / "absent.py")]})
    with pytest.raises(GridError, match="file not found"):
        expand_cells(load_grid(path))


def test_dry_run_lists_cells(tmp_path, capsys):
    path = _write_grid(tmp_path, {"grid": {"refiner": ["gat", "sage"], "edge_weights": ["partner"]}})
    assert main(["bench", "--grid", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "2 cells" in printed
    assert "refiner=gat,edge_weights=partner  [ok]" in printed
    assert "refiner=sage,edge_weights=partner  [invalid: " in printed


def test_cli_reports_invalid_grid(tmp_path, capsys):
    path = _write_grid(tmp_path, {"grid": {"k": 5}})
    assert main(["bench", "--grid", str(path)]) == 2
    assert "must be a list of values" in capsys.readouterr().err


# ---------------------------------------------------------------------- summary and plots


def _synthetic_results() -> pd.DataFrame:
    rows = []
    for refiner, k, seed, rsum in [
        ("gat", 3, 0, 100.0), ("gat", 3, 1, 110.0), ("gat", 8, 0, 120.0), ("gat", 8, 1, 124.0),
        ("mean", 3, 0, 90.0), ("mean", 3, 1, 94.0), ("mean", 8, 0, 96.0), ("mean", 8, 1, 98.0),
    ]:
        rows.append(
            {
                "cell_id": f"refiner={refiner},k={k},seed={seed}", "cell": f"refiner={refiner}, k={k}, seed={seed}",
                "status": "ok", "error": "", "train.method": "in2r", "rectify.refiner": refiner, "rectify.k": k,
                "data.noise_ratio": 0.4, "train.seed": seed, "test_best_rsum": rsum, "test_last_rsum": rsum - 5,
                "best_dev_rsum": rsum + 1, "text_prototype_fidelity": 0.7, "text_given_fidelity": 0.5,
                "image_prototype_fidelity": 0.6, "image_given_fidelity": 0.4,
            }
        )
    rows.append({"cell_id": "bad", "cell": "refiner=sage, k=3", "status": "failed", "error": "cannot | use"})
    return pd.DataFrame(rows)


AXES = ["rectify.refiner", "rectify.k", "train.seed"]


def test_aggregate_over_seeds():
    table = aggregate(_synthetic_results(), AXES)
    gat_3 = table[(table["rectify.refiner"] == "gat") & (table["rectify.k"] == 3)].iloc[0]
    assert len(table) == 4
    assert gat_3["runs"] == 2
    assert gat_3["test_best_rsum_mean"] == pytest.approx(105.0)
    assert gat_3["test_best_rsum_std"] == pytest.approx(math.sqrt(50.0))


def test_summary_markdown_table():
    text = summary_markdown(_synthetic_results(), AXES)
    assert "| refiner | k | runs | test rSum (best dev) |" in text
    assert "| gat | 3 | 2 | 105.0 ± 7.1 |" in text
    assert "Best setting on dev: refiner=gat, k=8 (dev rSum 123.0 ± 2.8" in text
    assert "## Failed cells" in text
    assert "cannot \\| use" in text


def test_plots_written(tmp_path):
    paths = write_plots(_synthetic_results(), AXES, tmp_path)
    assert sorted(path.name for path in paths) == ["prototype_fidelity.png", "rsum_vs_k.png", "rsum_vs_noise.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_no_plots_without_finished_cells(tmp_path):
    results = _synthetic_results()
    assert write_plots(results[results["status"] != "ok"], AXES, tmp_path) == []


# ---------------------------------------------------------------------- running cells


@pytest.mark.slow
def test_grid_runs_and_resumes(tmp_path, caplog, capsys):
    caplog.set_level("INFO", logger="in2r_graph.bench")
    grid = _write_grid(
        tmp_path,
        {
            "base": TINY_BASE,
            "grid": {"refiner": ["mean", "gcn"], "edge_weights": ["none", "partner"]},
            "exclude": [{"refiner": "gcn", "edge_weights": "partner"}],
            "overrides": [{"when": {"refiner": "gcn"}, "set": {"clean_threshold": 0.6}}],
        },
    )
    out = tmp_path / "out"
    output = run_benchmark(grid, out)

    results = read_results(out / "results.csv")
    statuses = dict(zip(results["cell_id"], results["status"]))
    assert statuses == {
        "refiner=mean,edge_weights=none": "ok",
        "refiner=mean,edge_weights=partner": "failed",
        "refiner=gcn,edge_weights=none": "ok",
    }
    failed = results[results["status"] == "failed"].iloc[0]
    assert "cannot use edge weights" in failed["error"]
    finished = results[results["status"] == "ok"]
    for column in ("test_best_rsum", "test_last_rsum", "best_dev_rsum", "split_precision", "split_recall",
                   "text_prototype_fidelity", "image_given_fidelity", "text_neighbour_purity"):
        assert finished[column].notna().all(), column
    assert (finished["peak_memory_mb"] > 50).all()
    assert (finished["wall_seconds"] > 0).all()
    assert (finished["rectify.k"] == 3).all()
    assert list(finished["train.clean_threshold"]) == [0.5, 0.6]
    assert output.run.ran == 3
    assert output.run.skipped == 0
    assert (out / "summary.md").read_text().count("| mean | none |") == 1
    assert {path.name for path in output.plots} == {"rsum_vs_k.png", "rsum_vs_noise.png", "prototype_fidelity.png"}
    assert "cell 1/3 (refiner=mean, edge_weights=none): running" in caplog.text
    assert "time left about" in caplog.text

    worker_log = out / "cells" / "refiner=gcn,edge_weights=none" / "worker.log"
    before = worker_log.stat().st_mtime_ns
    assert main(["bench", "--grid", str(grid), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 run now, 2 already finished, 1 failed" in printed
    assert worker_log.stat().st_mtime_ns == before
    rerun = read_results(out / "results.csv")
    assert len(rerun) == 3
    assert list(rerun.loc[rerun["status"] == "ok", "finished"]) == list(finished["finished"])


@pytest.mark.slow
def test_plugin_refiner_runs_in_worker(tmp_path):
    plugin = _write_plugin(tmp_path)
    grid = _write_grid(tmp_path, {"imports": [str(plugin)], "base": {**TINY_BASE, "rectify.refiner": "bench-test-graphconv"}})
    output = run_benchmark(grid, tmp_path / "out")
    row = output.run.results.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["rectify.refiner"] == "bench-test-graphconv"
    assert not math.isnan(row["text_prototype_fidelity"])


def test_bench_exits_1_when_every_cell_fails(tmp_path):
    grid = _write_grid(tmp_path, {"base": {**TINY_BASE, "data.root": str(tmp_path / "no-datasets")}})
    assert main(["bench", "--grid", str(grid), "--out", str(tmp_path / "out")]) == 1
    assert read_results(tmp_path / "out" / "results.csv")["status"].tolist() == ["failed"]


@pytest.mark.slow
def test_worker_failure_recorded(tmp_path):
    grid = _write_grid(tmp_path, {"base": {**TINY_BASE, "data.root": str(tmp_path / "no-datasets")}, "grid": {"seed": [0]}})
    output = run_benchmark(grid, tmp_path / "out")
    row = output.run.results.iloc[0]
    assert row["status"] == "failed"
    assert "no-datasets" in row["error"]
    assert row["peak_memory_mb"] > 0
    assert (tmp_path / "out" / "summary.md").read_text().count("## Failed cells") == 1


@pytest.mark.parametrize("content", ["", "hello,world\n1,2\n"])
def test_unreadable_results_file_rejected(tmp_path, content):
    grid = _write_grid(tmp_path, {"base": TINY_BASE})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.csv").write_text(content, encoding="utf-8")

    with pytest.raises(GridError, match="move it away to run the grid afresh"):
        run_benchmark(grid, tmp_path / "out")


def test_output_folder_that_is_a_file_rejected(tmp_path):
    grid = _write_grid(tmp_path, {"base": TINY_BASE})
    (tmp_path / "out").write_text("", encoding="utf-8")

    with pytest.raises(GridError, match="is a file; choose a folder with --out"):
        run_benchmark(grid, tmp_path / "out")


def test_grid_with_repeated_key_rejected(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("grid:\n  k: [3]\n  k: [5]\n", encoding="utf-8")

    with pytest.raises(GridError, match="line 3: key 'k' is set twice"):
        load_grid(path)


def test_parallel_workers_record_every_cell(tmp_path):
    grid = _write_grid(tmp_path, {"base": TINY_BASE, "grid": {"seed": [0, 1, 2]}})
    output = run_benchmark(grid, tmp_path / "out", workers=2)
    results = output.run.results
    assert list(results["cell_id"]) == ["seed=0", "seed=1", "seed=2"]
    assert (results["status"] == "ok").all()
    again = run_benchmark(grid, tmp_path / "out", workers=2)
    assert (again.run.ran, again.run.skipped) == (0, 3)


def test_two_runners_share_one_folder(tmp_path):
    grids = [
        _write_grid(tmp_path, {"base": TINY_BASE, "grid": {"seed": [seed]}}, name=f"grid{seed}.yaml") for seed in (0, 1)
    ]
    command = [sys.executable, "-m", "in2r_graph", "bench", "--out", str(tmp_path / "out"), "--grid"]

    processes = [subprocess.Popen([*command, str(grid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for grid in grids]
    errors = [process.communicate(timeout=300)[1] for process in processes]

    assert [process.returncode for process in processes] == [0, 0], errors
    results = read_results(tmp_path / "out" / "results.csv")
    assert sorted(results["cell_id"]) == ["seed=0", "seed=1"]
    assert (results["status"] == "ok").all()


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bench_rejects_bad_worker_count(tmp_path, capsys, value):
    grid = _write_grid(tmp_path, {"base": TINY_BASE})
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--grid", str(grid), "--workers", value])
    assert stop.value.code == 2
    assert "is not a whole number >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_cell_timeout_recorded(tmp_path):
    grid = _write_grid(tmp_path, {"base": TINY_BASE, "cell_timeout": 0.5})
    output = run_benchmark(grid, tmp_path / "out")
    row = output.run.results.iloc[0]
    assert row["status"] == "failed"
    assert "timed out after" in row["error"]


@pytest.mark.slow
def test_smoke_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["bench", "--grid", str(SMOKE_GRID), "--out", str(out)]) == 0
    results = read_results(out / "results.csv")
    assert len(results) == 13
    assert (results["status"] == "ok").sum() == 12
    failed = results[results["status"] != "ok"]
    assert list(failed["cell_id"]) == ["refiner=mean,k=3,topology=complete,edge_weights=partner"]
    assert results.loc[results["status"] == "ok", "test_best_rsum"].notna().all()
    summary = (out / "summary.md").read_text()
    assert "| refiner | k | topology | edge_weights | runs |" in summary
    for name in ("rsum_vs_k.png", "rsum_vs_noise.png", "prototype_fidelity.png"):
        assert (out / "plots" / name).read_bytes()[:8] == PNG_SIGNATURE
