import pytest
import torch
import torch.nn.functional as F

from in2r_graph.graphs import build_neighbourhood_batch


def _neighbourhoods(batch=3, k=4, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    partners = F.normalize(torch.randn(batch, k, dim, generator=generator), dim=-1)
    keys = F.normalize(torch.randn(batch, k, dim, generator=generator), dim=-1)
    query = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    scores = torch.rand(batch, k, generator=generator)
    return partners, keys, query, scores


def _edge_set(graph_batch, graph: int):
    start = int(graph_batch.ptr[graph])
    stop = int(graph_batch.ptr[graph + 1])
    source, target = graph_batch.edge_index
    inside = (source >= start) & (source < stop)
    return {(int(s) - start, int(t) - start) for s, t in zip(source[inside], target[inside])}


def test_complete_graph_edges():
    partners, _, _, _ = _neighbourhoods(k=4)
    graph_batch = build_neighbourhood_batch(partners)
    expected = {(i, j) for i in range(4) for j in range(4) if i != j}
    assert graph_batch.num_graphs == 3
    assert graph_batch.x.shape == (12, 8)
    for graph in range(3):
        assert _edge_set(graph_batch, graph) == expected


def test_complete_graph_with_query_node():
    partners, _, query, scores = _neighbourhoods(k=3)
    graph_batch = build_neighbourhood_batch(partners, query=query, scores=scores, query_node=True)
    assert graph_batch.x.shape == (12, 8)
    assert torch.equal(graph_batch.x[graph_batch.query_index], query)
    assert graph_batch.is_query.sum() == 3
    assert torch.equal(graph_batch.score.view(3, 4)[:, 1:], scores)
    assert _edge_set(graph_batch, 1) == {(i, j) for i in range(4) for j in range(4) if i != j}


def test_star_graph_edges():
    partners, _, query, _ = _neighbourhoods(k=4)
    graph_batch = build_neighbourhood_batch(partners, query=query, query_node=True, topology="star")
    expected = {(0, j) for j in range(1, 5)} | {(j, 0) for j in range(1, 5)}
    for graph in range(3):
        assert _edge_set(graph_batch, graph) == expected


def test_knn_graph_links_most_similar_fellows():
    partners, _, _, _ = _neighbourhoods(batch=2, k=5)
    graph_batch = build_neighbourhood_batch(partners, topology="knn", knn_edges=2)
    for graph in range(2):
        similarity = partners[graph] @ partners[graph].T
        similarity.fill_diagonal_(float("-inf"))
        nearest = similarity.topk(2, dim=1).indices
        expected = {(int(j), i) for i in range(5) for j in nearest[i]}
        assert _edge_set(graph_batch, graph) == expected


@pytest.mark.parametrize("side", ["partner", "query"])
def test_edge_weights_from_similarity(side):
    partners, keys, _, _ = _neighbourhoods(batch=2, k=3)
    graph_batch = build_neighbourhood_batch(partners, keys=keys, edge_weights=side)
    source, target = graph_batch.edge_index
    features = (partners if side == "partner" else keys).reshape(-1, 8)
    expected = ((features[source] * features[target]).sum(-1) + 1) / 2
    assert torch.allclose(graph_batch.edge_weight, expected, atol=1e-6)
    assert bool((graph_batch.edge_weight >= 0).all())


def test_graphs_do_not_share_edges():
    partners, _, _, _ = _neighbourhoods(batch=4, k=3)
    graph_batch = build_neighbourhood_batch(partners)
    source, target = graph_batch.edge_index
    assert torch.equal(graph_batch.batch[source], graph_batch.batch[target])


def test_builder_rejects_invalid_options():
    partners, _, _, _ = _neighbourhoods()
    with pytest.raises(ValueError, match="unknown topology"):
        build_neighbourhood_batch(partners, topology="ring")
    with pytest.raises(ValueError, match="needs query_node=True"):
        build_neighbourhood_batch(partners, topology="star")
    with pytest.raises(ValueError, match="query-side embeddings"):
        build_neighbourhood_batch(partners, edge_weights="query")
    with pytest.raises(ValueError, match="k=0"):
        build_neighbourhood_batch(partners[:, :0])


def test_knn_graph_with_query_node_adds_star_edges():
    partners, _, query, _ = _neighbourhoods(batch=2, k=4)
    graph_batch = build_neighbourhood_batch(partners, query=query, query_node=True, topology="knn", knn_edges=1)
    for graph in range(2):
        similarity = partners[graph] @ partners[graph].T
        similarity.fill_diagonal_(float("-inf"))
        nearest = similarity.argmax(dim=1)
        fellows = {(int(nearest[i]) + 1, i + 1) for i in range(4)}
        star = {(0, j) for j in range(1, 5)} | {(j, 0) for j in range(1, 5)}
        assert _edge_set(graph_batch, graph) == fellows | star


def test_knn_edges_capped_at_fellow_count():
    partners, _, _, _ = _neighbourhoods(batch=1, k=3)
    graph_batch = build_neighbourhood_batch(partners, topology="knn", knn_edges=10)
    assert _edge_set(graph_batch, 0) == {(i, j) for i in range(3) for j in range(3) if i != j}


def test_single_neighbour_knn_graph_has_no_edges():
    partners, _, _, _ = _neighbourhoods(batch=2, k=1)
    graph_batch = build_neighbourhood_batch(partners, topology="knn")
    assert graph_batch.edge_index.shape == (2, 0)
    assert graph_batch.x.shape == (2, 8)


def test_query_side_weights_include_query_node():
    partners, keys, query, _ = _neighbourhoods(batch=2, k=3)
    graph_batch = build_neighbourhood_batch(partners, keys=keys, query=query, query_node=True, edge_weights="query")
    source, target = graph_batch.edge_index
    features = torch.cat([query.unsqueeze(1), keys], dim=1).reshape(-1, 8)
    expected = ((features[source] * features[target]).sum(-1) + 1) / 2
    assert torch.allclose(graph_batch.edge_weight, expected, atol=1e-6)


def test_no_edge_weights_by_default():
    partners, _, _, _ = _neighbourhoods()
    graph_batch = build_neighbourhood_batch(partners)
    assert graph_batch.edge_weight is None


def test_query_index_without_query_node():
    partners, _, _, _ = _neighbourhoods(batch=3)
    graph_batch = build_neighbourhood_batch(partners)
    assert torch.equal(graph_batch.query_index, torch.full((3,), -1))
    assert not bool(graph_batch.is_query.any())


def test_graph_follows_input_dtype():
    partners, keys, query, scores = _neighbourhoods()
    graph_batch = build_neighbourhood_batch(
        partners.double(), keys=keys.double(), query=query.double(), scores=scores.double(),
        query_node=True, edge_weights="partner",
    )
    assert graph_batch.x.dtype == torch.float64
    assert graph_batch.edge_weight.dtype == torch.float64
    assert graph_batch.score.dtype == torch.float64


def test_builder_rejects_unknown_edge_weights():
    partners, _, _, _ = _neighbourhoods()
    with pytest.raises(ValueError, match="unknown edge_weights 'cosine'"):
        build_neighbourhood_batch(partners, edge_weights="cosine")


def test_builder_rejects_query_node_without_query():
    partners, _, _, _ = _neighbourhoods()
    with pytest.raises(ValueError, match="needs the query embeddings"):
        build_neighbourhood_batch(partners, query_node=True)


def test_builder_rejects_flat_partners():
    with pytest.raises(ValueError, match="shape \\(B, k, D\\)"):
        build_neighbourhood_batch(torch.zeros(4, 8))
