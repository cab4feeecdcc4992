"""Tests for the ground-truth diagnostics: split quality and prototype fidelity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from in2r_graph.evaluation.diagnostics import prototype_fidelity, split_auc, split_quality


def test_split_quality_counts():
    # Four pairs are truly clean and two noisy. Three are predicted clean, two of them truly clean.
    true_clean = np.array([True, True, True, True, False, False])
    predicted = np.array([True, True, False, False, True, False])

    metrics = split_quality(predicted, true_clean)

    assert metrics["clean_precision"] == pytest.approx(2 / 3)
    assert metrics["clean_recall"] == pytest.approx(2 / 4)
    assert metrics["noisy_precision"] == pytest.approx(1 / 3)
    assert metrics["noisy_recall"] == pytest.approx(1 / 2)
    assert metrics["accuracy"] == pytest.approx(3 / 6)
    assert metrics["num_predicted_clean"] == 3
    assert metrics["num_true_clean"] == 4
    assert "auc" not in metrics


def test_split_quality_perfect():
    true_clean = np.array([True, False, True, False, False])

    metrics = split_quality(true_clean.copy(), true_clean)

    for key in ("clean_precision", "clean_recall", "noisy_precision", "noisy_recall", "accuracy"):
        assert metrics[key] == 1.0, key


def test_split_quality_empty_clean_prediction():
    true_clean = np.array([True, False, True])
    predicted = np.zeros(3, dtype=bool)

    metrics = split_quality(predicted, true_clean)

    assert metrics["clean_precision"] == 0.0
    assert metrics["clean_recall"] == 0.0
    assert metrics["noisy_precision"] == pytest.approx(1 / 3)
    assert metrics["noisy_recall"] == 1.0


def test_split_quality_empty_noisy_prediction():
    true_clean = np.array([True, True, True])
    predicted = np.ones(3, dtype=bool)

    metrics = split_quality(predicted, true_clean)

    assert metrics["clean_precision"] == 1.0
    assert metrics["noisy_precision"] == 0.0
    assert metrics["noisy_recall"] == 0.0
    assert metrics["accuracy"] == 1.0


def test_split_quality_integer_and_tensor_labels():
    true_clean = np.array([1, 0, 1, 1], dtype=np.int64)
    predicted = torch.tensor([True, False, False, True])

    metrics = split_quality(predicted, true_clean)

    assert metrics["clean_precision"] == 1.0
    assert metrics["clean_recall"] == pytest.approx(2 / 3)


def test_split_quality_with_auc():
    rng = np.random.default_rng(0)
    true_clean = rng.random(200) < 0.6
    clean_prob = np.clip(true_clean * 0.4 + rng.random(200) * 0.6, 0.0, 1.0)

    metrics = split_quality(clean_prob > 0.5, true_clean, clean_prob)

    assert metrics["auc"] == pytest.approx(roc_auc_score(true_clean, clean_prob))
    assert 0.5 < metrics["auc"] < 1.0


def test_split_auc_matches_sklearn():
    true_clean = np.array([True, False, True, False, True])
    clean_prob = torch.tensor([0.9, 0.2, 0.4, 0.5, 0.8])

    assert split_auc(clean_prob, true_clean) == pytest.approx(roc_auc_score(true_clean, clean_prob.numpy()))


@pytest.mark.parametrize("label", [True, False])
def test_split_auc_one_class_nan(label):
    true_clean = np.full(4, label)

    assert math.isnan(split_auc(np.array([0.1, 0.5, 0.7, 0.9]), true_clean))


def test_split_length_mismatch_raises():
    with pytest.raises(ValueError, match="predicted_clean has 3 entries but true_clean has 2"):
        split_quality(np.ones(3, dtype=bool), np.ones(2, dtype=bool))


def test_split_float_labels_raise():
    with pytest.raises(TypeError, match="predicted_clean must be boolean or 0/1 integers, got dtype float64"):
        split_quality(np.array([0.2, 0.9]), np.array([True, False]))


def test_split_non_binary_integers_raise():
    with pytest.raises(ValueError, match=r"true_clean must contain only 0 and 1, got also \[2\]"):
        split_quality(np.array([True, False]), np.array([1, 2]))


def test_split_empty_raises():
    with pytest.raises(ValueError, match="predicted_clean is empty"):
        split_quality(np.array([], dtype=bool), np.array([], dtype=bool))


def test_split_2d_raises():
    with pytest.raises(ValueError, match=r"true_clean must be 1-D, got shape \(2, 2\)"):
        split_quality(np.ones(4, dtype=bool), np.ones((2, 2), dtype=bool))


def test_split_auc_non_finite_raises():
    with pytest.raises(ValueError, match="clean_prob contains NaN"):
        split_auc(np.array([0.1, np.nan]), np.array([True, False]))


def test_fidelity_values():
    true_partners = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    prototypes = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # same directions as the true partners
    given_partners = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # orthogonal to the true partners

    metrics = prototype_fidelity(prototypes, true_partners, given_partners)

    assert metrics["prototype_cosine"] == pytest.approx(1.0)
    assert metrics["given_cosine"] == pytest.approx(0.0)


def test_fidelity_matches_mean_cosine():
    generator = torch.Generator().manual_seed(0)
    prototypes, true_partners, given_partners = torch.randn(3, 16, 8, generator=generator)

    metrics = prototype_fidelity(prototypes, true_partners, given_partners)

    expected_prototype = F.cosine_similarity(prototypes, true_partners, dim=1).mean().item()
    expected_given = F.cosine_similarity(given_partners, true_partners, dim=1).mean().item()
    assert metrics["prototype_cosine"] == pytest.approx(expected_prototype, rel=1e-6)
    assert metrics["given_cosine"] == pytest.approx(expected_given, rel=1e-6)


def test_fidelity_zero_vector():
    true_partners = torch.tensor([[1.0, 0.0]])

    metrics = prototype_fidelity(torch.zeros(1, 2), true_partners, torch.tensor([[-1.0, 0.0]]))

    assert metrics["prototype_cosine"] == 0.0
    assert metrics["given_cosine"] == pytest.approx(-1.0)


def test_fidelity_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"true_partners has shape \(2, 3\) but prototypes has shape \(2, 4\)"):
        prototype_fidelity(torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 4))


def test_fidelity_empty_raises():
    with pytest.raises(ValueError, match="prototypes is empty"):
        prototype_fidelity(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 4))


def test_fidelity_numpy_raises():
    with pytest.raises(TypeError, match="given_partners must be a Tensor"):
        prototype_fidelity(torch.randn(2, 4), torch.randn(2, 4), np.zeros((2, 4)))
