"""Degenerate but valid input: equal losses, no noisy pair found, a bank smaller than k. Runs finish without NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from in2r_graph.memory import MemoryBank
from in2r_graph.selection import clean_probability, split_clean
from in2r_graph.training.checkpoint import load_checkpoint
from in2r_graph.training.trainer import bank_ready

from .helpers import CAPTIONS_PER_IMAGE, SPLIT_IMAGES, train_args

TRAIN_PAIRS = SPLIT_IMAGES["train"] * CAPTIONS_PER_IMAGE


def _non_finite_entries(run_dir: Path) -> list[str]:
    """Return 'epoch/key' for every NaN or infinite number the run recorded, test metrics included."""
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    bad = [
        f"{record['epoch']}/{key}"
        for record in state["history"]
        for key, value in record.items()
        if isinstance(value, float) and not math.isfinite(value)
    ]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    for row, metrics in summary["test"].items():
        bad += [f"test {row}/{key}" for key, value in metrics.items() if not math.isfinite(value)]
    return bad


def _history(run_dir: Path) -> list[dict]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["history"]


def test_equal_losses_run_without_nan(dataset, tmp_path, cli_in_process):
    # Identical features for every training pair make every per-sample loss equal.
    images = np.load(dataset / "train_ims.npy")
    np.save(dataset / "train_ims.npy", np.broadcast_to(images[:1], images.shape).copy())
    texts = np.load(dataset / "train_caps_minilm.npy")
    np.save(dataset / "train_caps_minilm.npy", np.broadcast_to(texts[:1], texts.shape).copy())

    result = cli_in_process(*train_args(dataset, tmp_path / "runs", epochs=2))
    run_dir = tmp_path / "runs" / "run"

    assert result.returncode == 0, result.stderr
    assert f"all {TRAIN_PAIRS} per-sample losses are equal" in result.stderr
    assert "the mixture found no noisy pair" in result.stderr
    assert _non_finite_entries(run_dir) == []
    assert _history(run_dir)[1]["A/labeled_fraction"] == (TRAIN_PAIRS - 1) / TRAIN_PAIRS


def test_bank_smaller_than_k_run_without_nan(shared_dataset, tmp_path, cli_in_process):
    k = TRAIN_PAIRS - 20

    result = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", "--set", f"rectify.k={k}", epochs=3))
    run_dir = tmp_path / "runs" / "run"
    first_cotrain = _history(run_dir)[1]

    assert result.returncode == 0, result.stderr
    assert "rectification skipped" in result.stderr
    assert first_cotrain["A/rectify_skipped"] > 0
    assert first_cotrain["B/rectify_skipped"] > 0
    assert _non_finite_entries(run_dir) == []


def test_clean_run_without_nan(shared_dataset, tmp_path, cli_in_process):
    result = cli_in_process(*train_args(shared_dataset, tmp_path / "runs", "--set", "data.noise_ratio=0", epochs=2))

    assert result.returncode == 0, result.stderr
    assert "0.00% realised" in result.stdout
    assert _non_finite_entries(tmp_path / "runs" / "run") == []


def test_single_loss_is_clean():
    probability = clean_probability(np.array([0.7]))

    assert probability.tolist() == [1.0]


def test_near_equal_losses_are_clean():
    losses = np.full(50, 0.25)
    losses[3] += 1e-14

    probability = clean_probability(losses)

    assert np.isfinite(probability).all()
    assert (probability == 1.0).all()


def test_no_noisy_pair_leaves_one_unlabeled():
    labeled = split_clean(np.ones(120), threshold=0.5, min_noisy_fraction=0.01)

    assert labeled.sum() == 119
    assert not labeled[0]


def test_single_pair_stays_labeled():
    labeled = split_clean(np.ones(1), threshold=0.5, min_noisy_fraction=0.01)

    assert labeled.tolist() == [True]


def test_bank_ready_needs_k_plus_own_pair():
    bank = MemoryBank(capacity=8, dim=4)
    bank.push(torch.randn(4, 4), torch.randn(4, 4), torch.arange(4))

    assert not bank_ready(bank, 4)
    assert bank_ready(bank, 3)
    assert not bank_ready(None, 1)


def test_bank_ready_counts_copies():
    bank = MemoryBank(capacity=8, dim=4)
    bank.push(torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 2, 3]))

    assert not bank_ready(bank, 4)
    assert bank_ready(bank, 3)
