"""in2r-graph: rectify noisy image-text correspondence with graph refiners over
intra-modal neighbourhoods (IN2R), built on PyTorch Geometric.

The public names below are imported on first use. Importing PyTorch Geometric
takes several seconds, so ``import in2r_graph`` and command-line calls that do
not need the graph code (``in2r-graph noise``, ``in2r-graph config``, input
errors) stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> submodule that defines it.
_EXPORTS = {
    "GraphOptions": ".rectify",
    "MemoryBank": ".memory",
    "Refiner": ".refiners",
    "build_neighbourhood_batch": ".graphs",
    "build_refiner": ".refiners",
    "knn_search": ".search",
    "list_refiners": ".refiners",
    "register_refiner": ".refiners",
    "synthesize_prototypes": ".rectify",
    "train_paired": ".generic",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .graphs import build_neighbourhood_batch
    from .memory import MemoryBank
    from .rectify import GraphOptions, synthesize_prototypes
    from .refiners import Refiner, build_refiner, list_refiners, register_refiner
    from .generic import train_paired
    from .search import knn_search

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
