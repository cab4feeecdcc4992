"""Clean/noisy selection: per-sample losses -> Gaussian mixture -> split."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

logger = logging.getLogger(__name__)


def clean_probability(losses: np.ndarray, seed: int = 0) -> np.ndarray:
    """Fit a two-component Gaussian mixture to min-max normalised losses.

    Returns the posterior of the component with the smaller mean (the clean
    one) for each sample. When every loss is equal the losses carry no signal:
    the normalisation would divide by zero, so every sample gets probability
    1.0 and the caller's minimum-noisy rule decides.

    Shapes:
        losses: (N,) -> (N,) float64 in [0, 1].
    """
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    if losses.size == 0:
        raise ValueError("clean_probability needs at least one loss value")
    if not np.isfinite(losses).all():
        raise ValueError(f"per-sample losses contain {int((~np.isfinite(losses)).sum())} NaN or infinite values")
    spread = losses.max() - losses.min()
    if spread <= 1e-12 or losses.size < 2:
        logger.warning("all %d per-sample losses are equal; treating every pair as clean", losses.size)
        return np.ones_like(losses)
    normalised = ((losses - losses.min()) / spread).reshape(-1, 1)
    mixture = GaussianMixture(n_components=2, max_iter=20, tol=1e-2, reg_covar=5e-4, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(normalised)
    posterior = mixture.predict_proba(normalised)
    clean_component = int(np.argmin(mixture.means_.reshape(-1)))
    return posterior[:, clean_component]


def split_clean(clean_prob: np.ndarray, threshold: float = 0.5, min_noisy_fraction: float = 0.01) -> np.ndarray:
    """Return a boolean mask of labeled (trusted) pairs.

    Pairs with probability above ``threshold`` are labeled. When none falls
    at or below it, the ``min_noisy_fraction`` share with the lowest
    probability is made unlabeled, so the rectification branch always has
    data; when none is above it, the same share with the highest probability
    is labeled, so the labeled branch always has data.

    Shapes:
        clean_prob: (N,) -> (N,) bool.
    """
    clean_prob = np.asarray(clean_prob)
    labeled = clean_prob > threshold
    count = max(1, int(round(min_noisy_fraction * clean_prob.size)))
    order = np.argsort(clean_prob, kind="stable")
    if labeled.all() and clean_prob.size > 1:
        labeled[order[:count]] = False
        logger.info("the mixture found no noisy pair; the %d least probable pairs are treated as noisy", count)
    elif not labeled.any():
        labeled[order[-count:]] = True
        logger.warning("the mixture found no clean pair; the %d most probable pairs are treated as clean", count)
    return labeled
