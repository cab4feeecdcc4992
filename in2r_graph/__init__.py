"""in2r-graph: rectify noisy image-text correspondence with graph refiners over
intra-modal neighbourhoods (IN2R), built on PyTorch Geometric."""

from .graphs import build_neighbourhood_batch
from .memory import MemoryBank
from .rectify import GraphOptions, synthesize_prototypes
from .refiners import Refiner, build_refiner, list_refiners, register_refiner
from .search import knn_search

__version__ = "0.1.0"

__all__ = [
    "GraphOptions",
    "MemoryBank",
    "Refiner",
    "build_neighbourhood_batch",
    "build_refiner",
    "knn_search",
    "list_refiners",
    "register_refiner",
    "synthesize_prototypes",
]
