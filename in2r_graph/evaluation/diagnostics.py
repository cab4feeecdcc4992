"""Diagnostics that read ground truth: clean/noisy split quality and prototype fidelity.

These functions compare a model's decisions with the true clean labels and the
true partners of noisy pairs. They are for reports only, and their results
must never feed back into training.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor

logger = logging.getLogger(__name__)


def split_quality(
    predicted_clean: np.ndarray | Tensor,
    true_clean: np.ndarray | Tensor,
    clean_prob: np.ndarray | Tensor | None = None,
) -> dict[str, float]:
    """Score a predicted clean/noisy split against the true clean labels.

    The clean set is the positive class: ``clean_precision`` is the fraction
    of predicted-clean pairs that are truly clean and ``clean_recall`` the
    fraction of truly clean pairs predicted clean. ``noisy_precision`` and
    ``noisy_recall`` are the same for the noisy set. A ratio whose
    denominator is zero is defined as 0.0: the precision of an empty
    predicted set, and the recall of a class absent from ``true_clean``.

    Args:
        predicted_clean: Whether each pair was selected as clean. Booleans, or
            integers that are all 0 or 1.
        true_clean: Whether each pair is truly clean, in the same encoding.
        clean_prob: Optional predicted probability of each pair being clean.
            When given, the result also contains ``auc`` from
            :func:`split_auc`.

    Returns:
        A dictionary with ``clean_precision``, ``clean_recall``,
        ``noisy_precision``, ``noisy_recall`` and ``accuracy`` (fractions in
        [0, 1]), ``num_predicted_clean`` and ``num_true_clean`` (counts), and
        ``auc`` when ``clean_prob`` is given.

    Raises:
        TypeError: If a label array is neither boolean nor integer.
        ValueError: If the arrays are empty, not 1-D or differ in length, or
            if integer labels contain values other than 0 and 1.

    Shapes:
        - predicted_clean: ``(N,)``
        - true_clean: ``(N,)``
        - clean_prob: ``(N,)``
    """
    predicted = _as_bool_labels(predicted_clean, "predicted_clean")
    truth = _as_bool_labels(true_clean, "true_clean")
    _check_same_length(predicted, "predicted_clean", truth, "true_clean")

    true_positive = int(np.count_nonzero(predicted & truth))
    true_negative = int(np.count_nonzero(~predicted & ~truth))
    num_predicted_clean = int(np.count_nonzero(predicted))
    num_true_clean = int(np.count_nonzero(truth))
    num_predicted_noisy = predicted.size - num_predicted_clean
    num_true_noisy = truth.size - num_true_clean

    metrics = {
        "clean_precision": _safe_ratio(true_positive, num_predicted_clean),
        "clean_recall": _safe_ratio(true_positive, num_true_clean),
        "noisy_precision": _safe_ratio(true_negative, num_predicted_noisy),
        "noisy_recall": _safe_ratio(true_negative, num_true_noisy),
        "accuracy": (true_positive + true_negative) / truth.size,
        "num_predicted_clean": float(num_predicted_clean),
        "num_true_clean": float(num_true_clean),
    }
    if clean_prob is not None:
        metrics["auc"] = split_auc(clean_prob, truth)
    return metrics


def split_auc(clean_prob: np.ndarray | Tensor, true_clean: np.ndarray | Tensor) -> float:
    """Compute the ROC AUC of clean probabilities against the true clean labels.

    Uses :func:`sklearn.metrics.roc_auc_score` with clean as the positive
    class. Returns NaN when ``true_clean`` contains only one class, because
    the AUC is undefined there.

    Args:
        clean_prob: Predicted probability (or any score) of each pair being
            clean; higher means more likely clean.
        true_clean: Whether each pair is truly clean, as booleans or 0/1
            integers.

    Returns:
        The AUC in [0, 1], or NaN when only one class is present.

    Raises:
        TypeError: If ``true_clean`` is neither boolean nor integer, or
            ``clean_prob`` is not numeric.
        ValueError: If the arrays are empty, not 1-D or differ in length, if
            ``true_clean`` contains values other than 0 and 1, or if
            ``clean_prob`` contains NaN or infinite values.

    Shapes:
        - clean_prob: ``(N,)``
        - true_clean: ``(N,)``
    """
    truth = _as_bool_labels(true_clean, "true_clean")
    scores = _to_numpy(clean_prob, "clean_prob")
    if scores.dtype == np.bool_ or not np.issubdtype(scores.dtype, np.number):
        raise TypeError(f"clean_prob must be numeric scores, got dtype {scores.dtype}")
    if scores.ndim != 1:
        raise ValueError(f"clean_prob must be 1-D, got shape {scores.shape}")
    _check_same_length(scores, "clean_prob", truth, "true_clean")
    if not np.isfinite(scores).all():
        raise ValueError("clean_prob contains NaN or infinite values")

    if truth.all() or not truth.any():
        logger.debug("split_auc: true_clean contains only one class, so the AUC is undefined")
        return float("nan")
    return float(roc_auc_score(truth, scores))


def prototype_fidelity(prototypes: Tensor, true_partners: Tensor, given_partners: Tensor) -> dict[str, float]:
    """Measure how close rectified prototypes are to the true partners.

    For each pair, ``prototypes[b]`` is the rectified target that replaced
    the given (possibly wrong) partner ``given_partners[b]``, and
    ``true_partners[b]`` is the embedding of the correct partner. A useful
    rectification has ``prototype_cosine`` above ``given_cosine``.

    Args:
        prototypes: Rectified prototypes.
        true_partners: Embeddings of the true partners.
        given_partners: Embeddings of the partners given in the (noisy) data.

    Returns:
        ``prototype_cosine``: the mean cosine similarity of prototype and true
        partner. ``given_cosine``: the mean cosine similarity of given and true
        partner. A zero vector has cosine 0 with everything.

    Raises:
        TypeError: If an argument is not a tensor or has a non-floating dtype.
        ValueError: If an argument is not 2-D, the shapes differ, or the
            batch is empty.

    Shapes:
        - prototypes: ``(B, D)``
        - true_partners: ``(B, D)``
        - given_partners: ``(B, D)``
    """
    named = (("prototypes", prototypes), ("true_partners", true_partners), ("given_partners", given_partners))
    for name, tensor in named:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {tensor.dtype}")
        if tensor.dim() != 2:
            raise ValueError(f"{name} must be 2-D (B, D), got shape {tuple(tensor.shape)}")
        if tensor.shape != prototypes.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but prototypes has shape "
                f"{tuple(prototypes.shape)}; expected equal shapes"
            )
    if prototypes.shape[0] == 0:
        raise ValueError("prototypes is empty (B = 0); expected at least one pair")

    with torch.no_grad():
        dtype = torch.promote_types(prototypes.dtype, true_partners.dtype)
        dtype = torch.promote_types(dtype, given_partners.dtype)
        true_partners = true_partners.to(device=prototypes.device, dtype=dtype)
        prototype_cosine = F.cosine_similarity(prototypes.to(dtype), true_partners, dim=1)  # (B,)
        given_cosine = F.cosine_similarity(
            given_partners.to(device=prototypes.device, dtype=dtype), true_partners, dim=1
        )  # (B,)
    return {
        "prototype_cosine": prototype_cosine.double().mean().item(),
        "given_cosine": given_cosine.double().mean().item(),
    }


def _to_numpy(values: object, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        return values
    raise TypeError(f"{name} must be a numpy array or a Tensor, got {type(values).__name__}")


def _as_bool_labels(labels: object, name: str) -> np.ndarray:
    """Return ``labels`` as a 1-D boolean array, accepting booleans or 0/1 integers."""
    array = _to_numpy(labels, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; expected at least one pair")
    if array.dtype == np.bool_:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must be boolean or 0/1 integers, got dtype {array.dtype}")
    invalid = np.setdiff1d(np.unique(array), [0, 1])
    if invalid.size > 0:
        raise ValueError(f"{name} must contain only 0 and 1, got also {invalid[:10].tolist()}")
    return array.astype(bool)


def _check_same_length(first: np.ndarray, first_name: str, second: np.ndarray, second_name: str) -> None:
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{first_name} has {first.shape[0]} entries but {second_name} has "
            f"{second.shape[0]}; expected one entry per pair in both"
        )


def _safe_ratio(numerator: int, denominator: int) -> float:
    # A ratio over an empty set is defined as 0.0 instead of raising ZeroDivisionError.
    return numerator / denominator if denominator > 0 else 0.0
