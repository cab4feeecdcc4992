import numpy as np
import pytest

from in2r_graph.selection import clean_probability, split_clean


def test_mixture_separates_two_loss_groups():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.1, 0.02, 300), rng.normal(0.8, 0.05, 200)])
    prob = clean_probability(losses)
    assert prob[:300].mean() > 0.95
    assert prob[300:].mean() < 0.05


def test_equal_losses_do_not_divide_by_zero():
    prob = clean_probability(np.full(100, 0.3))
    assert np.isfinite(prob).all()
    assert (prob == 1.0).all()


def test_nonfinite_losses_rejected():
    with pytest.raises(ValueError, match="NaN or infinite"):
        clean_probability(np.array([0.1, np.nan, 0.2]))


def test_split_without_noisy_pairs_keeps_one_percent_unlabeled():
    prob = np.linspace(0.9, 1.0, 500)
    labeled = split_clean(prob, threshold=0.5, min_noisy_fraction=0.01)
    assert (~labeled).sum() == 5
    assert not labeled[:5].any()


def test_split_without_clean_pairs_keeps_some_labeled():
    prob = np.linspace(0.0, 0.2, 200)
    labeled = split_clean(prob, threshold=0.5, min_noisy_fraction=0.01)
    assert labeled.sum() == 2
    assert labeled[-2:].all()


def test_split_threshold():
    prob = np.array([0.2, 0.6, 0.5, 0.9])
    assert split_clean(prob, threshold=0.5).tolist() == [False, True, False, True]
