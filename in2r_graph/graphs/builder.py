"""Turn a batch of retrieved neighbourhoods into one PyG ``Batch``.

Every neighbourhood has the same number of nodes, so the whole batch is built
with index arithmetic on one edge template instead of a Python loop over
graphs (``Batch.from_data_list`` would cost milliseconds per training step).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Batch

TOPOLOGIES = ("complete", "knn", "star")
EDGE_WEIGHTS = ("none", "partner", "query")


def _similarity_to_weight(similarity: Tensor) -> Tensor:
    """Map a cosine similarity in [-1, 1] to a non-negative weight in [0, 1]."""
    return ((similarity + 1.0) / 2.0).clamp(0.0, 1.0)


def build_neighbourhood_batch(
    partners: Tensor,
    *,
    keys: Tensor | None = None,
    query: Tensor | None = None,
    scores: Tensor | None = None,
    query_node: bool = False,
    topology: str = "complete",
    knn_edges: int = 3,
    edge_weights: str = "none",
) -> Batch:
    """Build ``B`` neighbourhood graphs of ``k`` (+1) nodes as one batch.

    Node ``0`` of each graph is the query when ``query_node`` is set; the
    other nodes are the neighbours' partner embeddings in search order.

    Args:
        partners: the partner-side embeddings of the neighbours (for an image
            query: the captions paired with its nearest bank images).
        keys: the neighbours' query-side embeddings (the bank images that
            matched); needed for ``edge_weights="query"``.
        query: the query embeddings; needed for ``query_node``.
        scores: search similarity of each neighbour to its query, stored as
            the node attribute ``score`` (0 for the query node).
        query_node: add the query as an extra node.
        topology: ``complete`` (every ordered pair of distinct nodes),
            ``knn`` (each neighbour linked from its ``knn_edges`` most similar
            fellow neighbours by partner similarity, plus query edges when
            the query is a node) or ``star`` (query to and from every neighbour).
        edge_weights: ``none``, ``partner`` (similarity of the two nodes'
            partner-side embeddings) or ``query`` (similarity of their
            query-side embeddings), mapped to ``[0, 1]`` by ``(s + 1) / 2``.

    Returns:
        A ``torch_geometric.data.Batch`` with ``x`` (B * n, D), ``edge_index``,
        ``edge_weight`` (E,) when requested, ``batch``, ``ptr``, ``score``
        (B * n,), ``is_query`` (B * n,) and ``query_index`` (B,) (-1 when the
        query is not a node).

    Shapes:
        partners, keys: (B, k, D); query: (B, D); scores: (B, k).
    """
    if partners.dim() != 3:
        raise ValueError(f"partners must have shape (B, k, D); got {tuple(partners.shape)}")
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; expected one of {', '.join(TOPOLOGIES)}")
    if edge_weights not in EDGE_WEIGHTS:
        raise ValueError(f"unknown edge_weights {edge_weights!r}; expected one of {', '.join(EDGE_WEIGHTS)}")
    num_graphs, k, dim = partners.shape
    if k < 1:
        raise ValueError("a neighbourhood needs at least 1 neighbour; got k=0")
    if query_node and query is None:
        raise ValueError("query_node=True needs the query embeddings")
    if topology == "star" and not query_node:
        raise ValueError("topology='star' links neighbours to the query, so it needs query_node=True")
    if edge_weights == "query" and keys is None:
        raise ValueError("edge_weights='query' needs the neighbours' query-side embeddings (keys)")
    device = partners.device

    # Node features per graph: [query] + neighbours -> (B, n, D).
    partner_side = partners
    query_side = keys
    if query_node:
        partner_side = torch.cat([query.unsqueeze(1), partners], dim=1)
        if keys is not None:
            query_side = torch.cat([query.unsqueeze(1), keys], dim=1)
    nodes = partner_side.size(1)
    offset = 1 if query_node else 0

    # Edge template of graph b: (B, 2, E_per_graph), local node ids.
    local = _edge_template(partners, nodes, offset, topology, knn_edges)  # (B, 2, E)
    source, target = local[:, 0], local[:, 1]  # (B, E)

    edge_weight = None
    if edge_weights != "none":
        side = partner_side if edge_weights == "partner" else query_side
        similarity = (side.gather(1, source.unsqueeze(-1).expand(-1, -1, dim)) * side.gather(
            1, target.unsqueeze(-1).expand(-1, -1, dim)
        )).sum(-1)  # (B, E)
        edge_weight = _similarity_to_weight(similarity).reshape(-1)

    graph_offsets = (torch.arange(num_graphs, device=device) * nodes).view(-1, 1, 1)
    edge_index = (local + graph_offsets).permute(1, 0, 2).reshape(2, -1)  # (2, B * E)

    score = torch.zeros(num_graphs, nodes, device=device, dtype=partners.dtype)
    if scores is not None:
        score[:, offset:] = scores.to(partners.dtype)
    is_query = torch.zeros(num_graphs, nodes, dtype=torch.bool, device=device)
    if query_node:
        is_query[:, 0] = True
    query_index = (
        torch.arange(num_graphs, device=device) * nodes
        if query_node
        else torch.full((num_graphs,), -1, dtype=torch.long, device=device)
    )

    fields = dict(
        x=partner_side.reshape(-1, dim),
        edge_index=edge_index,
        batch=torch.arange(num_graphs, device=device).repeat_interleave(nodes),
        ptr=torch.arange(num_graphs + 1, device=device) * nodes,
        score=score.reshape(-1),
        is_query=is_query.reshape(-1),
        query_index=query_index,
        nodes_per_graph=nodes,
    )
    if edge_weight is not None:
        fields["edge_weight"] = edge_weight
    return Batch(**fields)


def _edge_template(partners: Tensor, nodes: int, offset: int, topology: str, knn_edges: int) -> Tensor:
    """Return local edge indices ``(B, 2, E)`` for every graph of the batch."""
    num_graphs, k, _ = partners.shape
    device = partners.device
    if topology == "complete":
        grid = torch.ones(nodes, nodes, dtype=torch.bool, device=device).fill_diagonal_(False)
        template = grid.nonzero().T  # (2, n * (n - 1))
        return template.unsqueeze(0).expand(num_graphs, -1, -1)
    neighbour_ids = torch.arange(offset, offset + k, device=device)
    if topology == "star":
        query_ids = torch.zeros(k, dtype=torch.long, device=device)
        template = torch.cat(
            [torch.stack([query_ids, neighbour_ids]), torch.stack([neighbour_ids, query_ids])], dim=1
        )  # (2, 2k)
        return template.unsqueeze(0).expand(num_graphs, -1, -1)

    # knn: each neighbour receives edges from its m most similar fellow neighbours.
    fellows = min(knn_edges, k - 1)
    parts = []
    if fellows > 0:
        similarity = partners @ partners.transpose(1, 2)  # (B, k, k)
        eye = torch.eye(k, dtype=torch.bool, device=device)
        similarity = similarity.masked_fill(eye, float("-inf"))
        nearest = similarity.topk(fellows, dim=2).indices + offset  # (B, k, m)
        target = neighbour_ids.view(1, k, 1).expand(num_graphs, k, fellows)
        parts.append(torch.stack([nearest.reshape(num_graphs, -1), target.reshape(num_graphs, -1)], dim=1))
    if offset:
        query_ids = torch.zeros(k, dtype=torch.long, device=device)
        star = torch.cat([torch.stack([query_ids, neighbour_ids]), torch.stack([neighbour_ids, query_ids])], dim=1)
        parts.append(star.unsqueeze(0).expand(num_graphs, -1, -1))
    if not parts:
        return torch.zeros(num_graphs, 2, 0, dtype=torch.long, device=device)
    return torch.cat(parts, dim=2)
