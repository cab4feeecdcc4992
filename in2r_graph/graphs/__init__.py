"""Neighbourhood graphs: retrieved neighbours to one PyG batch."""

from .builder import EDGE_WEIGHTS, TOPOLOGIES, build_neighbourhood_batch

__all__ = ["EDGE_WEIGHTS", "TOPOLOGIES", "build_neighbourhood_batch"]
