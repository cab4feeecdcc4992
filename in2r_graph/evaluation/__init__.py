"""Retrieval metrics and split/prototype diagnostics."""

from .diagnostics import prototype_fidelity, split_auc, split_quality
from .retrieval import five_fold_metrics, format_metrics_table, retrieval_metrics

__all__ = [
    "five_fold_metrics",
    "format_metrics_table",
    "prototype_fidelity",
    "retrieval_metrics",
    "split_auc",
    "split_quality",
]
