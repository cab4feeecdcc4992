"""Retrieval metrics and split/prototype diagnostics.

The public names are imported on first use: the diagnostics need
scikit-learn, whose import takes about a second, and most callers only need
the retrieval metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Public name -> submodule that defines it.
_EXPORTS = {
    "five_fold_metrics": ".retrieval",
    "format_metrics_table": ".retrieval",
    "prototype_fidelity": ".diagnostics",
    "retrieval_metrics": ".retrieval",
    "split_auc": ".diagnostics",
    "split_quality": ".diagnostics",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .diagnostics import prototype_fidelity, split_auc, split_quality
    from .retrieval import five_fold_metrics, format_metrics_table, retrieval_metrics

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
