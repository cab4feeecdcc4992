"""Queries + memory bank + refiner -> soft prototypes (the IN2R rectification step).

This is the piece to reuse inside another training loop: give it the query
embeddings of suspected-noisy samples, the bank's query-side and partner-side
embeddings, and a refiner, and it returns one prototype partner per query.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .graphs import build_neighbourhood_batch
from .search import knn_search


@dataclass
class GraphOptions:
    """Options that turn a retrieved neighbourhood into a graph (see ``build_neighbourhood_batch``)."""

    topology: str = "complete"
    knn_edges: int = 3
    edge_weights: str = "none"
    query_node: bool = False


@dataclass
class Neighbourhood:
    """Search result for a batch of queries.

    Shapes:
        sims, positions: (B, k); partners, keys: (B, k, D).
    """

    sims: Tensor
    positions: Tensor
    partners: Tensor
    keys: Tensor


def retrieve_neighbourhood(
    queries: Tensor,
    bank_keys: Tensor,
    bank_partners: Tensor,
    k: int,
    *,
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
    backend: str = "torch",
) -> Neighbourhood:
    """Search the bank's query-side embeddings and gather the paired partners.

    Shapes:
        queries (B, D); bank_keys, bank_partners (Q, D); ids (B,) and (Q,).
    """
    sims, positions = knn_search(queries.detach(), bank_keys, k, backend=backend, query_ids=query_ids, key_ids=key_ids)
    return Neighbourhood(sims=sims, positions=positions, partners=bank_partners[positions], keys=bank_keys[positions])


def synthesize_prototypes(
    queries: Tensor,
    bank_keys: Tensor,
    bank_partners: Tensor,
    refiner: nn.Module,
    k: int,
    *,
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
    backend: str = "torch",
    graph: GraphOptions | None = None,
) -> tuple[Tensor, Neighbourhood]:
    """Return one L2-normalised soft prototype per query, and the neighbourhood used.

    Args:
        queries: embeddings of the suspected-noisy samples (for an image
            query, its image embedding).
        bank_keys: bank embeddings of the query's modality (bank images).
        bank_partners: bank embeddings of the other modality, row-aligned
            with ``bank_keys`` (the captions paired with those images).
        refiner: a module mapping a graph batch to (B, D) prototypes.
        k: neighbours per query.
        query_ids, key_ids: pair ids; a bank entry with the query's own id is
            never its neighbour.
        backend: search backend name.
        graph: graph construction options.

    Shapes:
        queries (B, D); bank_keys, bank_partners (Q, D) -> prototypes (B, D).
    """
    found = retrieve_neighbourhood(
        queries, bank_keys, bank_partners, k, query_ids=query_ids, key_ids=key_ids, backend=backend
    )
    return refine_neighbourhood(queries, found, refiner, graph), found


def refine_neighbourhood(
    queries: Tensor, found: Neighbourhood, refiner: nn.Module, graph: GraphOptions | None = None
) -> Tensor:
    """Build the graphs of an already retrieved neighbourhood and return the refiner's prototypes.

    Use it when the neighbours come from elsewhere than one local bank, such
    as a bank sharded across processes.

    Shapes:
        queries (B, D); found.partners, found.keys (B, k, D) -> prototypes (B, D).
    """
    graph = graph or GraphOptions()
    batch = build_neighbourhood_batch(
        found.partners,
        keys=found.keys,
        query=queries,
        scores=found.sims,
        query_node=graph.query_node,
        topology=graph.topology,
        knn_edges=graph.knn_edges,
        edge_weights=graph.edge_weights,
    )
    return refiner(batch)
