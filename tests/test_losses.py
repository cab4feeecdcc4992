import math

import pytest
import torch
import torch.nn.functional as F

from in2r_graph.losses import hinge_hardest, info_nce, per_sample_hinge


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_matches_cross_entropy():
    queries, targets = _unit(6, 8), _unit(6, 8, seed=1)
    logits = queries @ targets.T / 0.1
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert torch.allclose(info_nce(queries, targets, 0.1), expected)


def test_info_nce_complementary_term_adds_penalty():
    queries, targets = _unit(6, 8), _unit(6, 8, seed=1)
    plain = info_nce(queries, targets, 0.1)
    with_term = info_nce(queries, targets, 0.1, complementary_weight=1.0)
    assert with_term > plain
    assert torch.isfinite(with_term)


def test_info_nce_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        info_nce(_unit(4, 8), _unit(5, 8))


def test_hinge_hardest_zero_for_perfect_pairs():
    items = torch.eye(4)
    assert float(hinge_hardest(items, items, margin=0.2)) == 0.0


def test_hinge_hardest_uses_hardest_negative():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # Row 0: positive 0.6, hardest negative 0.0 -> 0; column 0: negative 0.8 - 0.6 + 0.2 = 0.4.
    # Row 1: positive 1.0, negative 0.8 -> 0; column 1: negative 0.0 -> 0.
    assert math.isclose(float(hinge_hardest(queries, targets, margin=0.2)), 0.4 / 2, rel_tol=1e-6)


def test_per_sample_hinge_flags_wrong_pair():
    images = torch.eye(4)
    texts = torch.eye(4)
    texts[[2, 3]] = texts[[3, 2]]  # pairs 2 and 3 are swapped
    losses = per_sample_hinge(images, texts, margin=0.2)
    assert losses.shape == (4,)
    assert losses[2] > losses[0]
    assert losses[3] > losses[1]


def test_per_sample_hinge_single_item():
    assert per_sample_hinge(_unit(1, 4), _unit(1, 4)).tolist() == [0.0]
