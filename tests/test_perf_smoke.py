"""Smoke run of the performance benchmarks: every script runs and writes its JSON.

Speed targets are never asserted here, because timings on a shared CI
machine are too noisy to mean anything. The benchmarks report them. Only correctness results
that do not depend on timing are checked.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "benchmarks" / "perf" / "run_all.py"
BENCHMARKS = ("search", "graphs", "refiners", "step", "eval", "scaling")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("perf")
    # A missing Flickr8k folder makes every script use synthetic features.
    command = [sys.executable, str(RUN_ALL), "--tiny", "--in-process", "--out", str(out), "--flickr8k", str(out / "absent")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_writes_json(results, name):
    payload = json.loads((results / f"{name}.json").read_text(encoding="utf-8"))
    assert payload["benchmark"] == name
    assert payload["mode"] == "tiny"
    assert payload["rows"]
    assert payload["targets"]
    assert {"cpu", "torch", "faiss", "date", "command"} <= set(payload["machine"])
    for item in payload["targets"]:
        assert {"target", "value", "limit", "met"} <= set(item)


def test_summary_lists_every_benchmark(results):
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert [result["benchmark"] for result in summary["results"]] == list(BENCHMARKS)
    assert all(result["ok"] for result in summary["results"])
    assert (results / "summary.md").read_text(encoding="utf-8").startswith("| benchmark |")


def test_eval_loop_matches_vectorised(results):
    payload = json.loads((results / "eval.json").read_text(encoding="utf-8"))
    for row in payload["rows"]:
        assert row["identical"], row


def test_search_rows_cover_backends(results):
    rows = json.loads((results / "search.json").read_text(encoding="utf-8"))["rows"]
    for row in rows:
        assert row["auto_choice"] in ("torch", "faiss")
        assert row["torch_ms"] > 0
        assert row["faiss_ms"] > 0
