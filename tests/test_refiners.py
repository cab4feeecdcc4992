import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv, GraphConv

from in2r_graph.graphs import build_neighbourhood_batch
from in2r_graph.refiners import (
    ParameterFreeRefiner,
    Refiner,
    build_refiner,
    get_refiner_class,
    list_refiners,
    register_refiner,
    registry,
)
from in2r_graph.refiners.gnn import dense_gat

DIM = 16
BATCH = 4
K = 5

# Graph options every refiner is checked under; edge weights are only passed
# to refiners that declare they can use them.
GRAPHS = {
    "complete": dict(topology="complete"),
    "knn": dict(topology="knn", knn_edges=2),
    "star-query": dict(topology="star", query_node=True),
    "complete-query-weighted": dict(topology="complete", query_node=True, edge_weights="partner"),
}
BUILT_IN = list_refiners()


def _neighbourhoods(batch=BATCH, k=K, seed=0):
    generator = torch.Generator().manual_seed(seed)
    partners = F.normalize(torch.randn(batch, k, DIM, generator=generator), dim=-1)
    keys = F.normalize(torch.randn(batch, k, DIM, generator=generator), dim=-1)
    query = F.normalize(torch.randn(batch, DIM, generator=generator), dim=-1)
    scores = torch.rand(batch, k, generator=generator)
    return partners, keys, query, scores


def _graph(partners, keys, query, scores, graph):
    return build_neighbourhood_batch(partners, keys=keys, query=query, scores=scores, **GRAPHS[graph])


def _build(name, graph="complete", **kwargs):
    options = GRAPHS[graph]
    if options.get("edge_weights", "none") != "none" and get_refiner_class(name).supports_edge_weight:
        kwargs.setdefault("use_edge_weight", True)
    torch.manual_seed(0)
    return build_refiner(name, DIM, heads=4, **kwargs).eval()


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("name", BUILT_IN)
def test_refiner_output_contract(name, graph):
    partners, keys, query, scores = _neighbourhoods()
    refiner = _build(name, graph)
    out = refiner(_graph(partners, keys, query, scores, graph))
    assert out.shape == (BATCH, DIM)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=-1), torch.ones(BATCH), atol=1e-5)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("name", BUILT_IN)
def test_refiner_gradients_reach_parameters(name, graph):
    partners, keys, query, scores = _neighbourhoods()
    refiner = _build(name, graph).train()
    partners = partners.clone().requires_grad_(True)
    out = refiner(_graph(partners, keys, query, scores, graph))
    target = F.normalize(torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(1)), dim=-1)
    (out * target).sum().backward()
    # On sparse graphs a node with one incoming edge has a constant attention
    # weight, so some attention parameters get an exact zero gradient there.
    dense = GRAPHS[graph]["topology"] == "complete"
    for parameter_name, parameter in refiner.named_parameters():
        assert parameter.grad is not None, f"{parameter_name} received no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{parameter_name} has a non-finite gradient"
        if dense:
            assert parameter.grad.abs().sum() > 0, f"{parameter_name} has an all-zero gradient"
    if name != "nearest":
        assert partners.grad is not None
        assert partners.grad.abs().sum() > 0


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("name", BUILT_IN)
def test_refiner_neighbour_order_invariant(name, graph):
    partners, keys, query, scores = _neighbourhoods()
    order = torch.tensor([3, 0, 4, 1, 2])
    refiner = _build(name, graph)
    out = refiner(_graph(partners, keys, query, scores, graph))
    shuffled = refiner(_graph(partners[:, order], keys[:, order], query, scores[:, order], graph))
    assert torch.allclose(out, shuffled, atol=1e-5)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("name", BUILT_IN)
def test_refiner_batch_independent(name, graph):
    partners, keys, query, scores = _neighbourhoods()
    refiner = _build(name, graph)
    out = refiner(_graph(partners, keys, query, scores, graph))
    changed_partners, changed_keys, changed_query, changed_scores = (
        partners.clone(), keys.clone(), query.clone(), scores.clone()
    )
    other_partners, other_keys, other_query, other_scores = _neighbourhoods(batch=1, seed=7)
    changed_partners[2], changed_keys[2], changed_query[2], changed_scores[2] = (
        other_partners[0], other_keys[0], other_query[0], other_scores[0]
    )
    other = refiner(_graph(changed_partners, changed_keys, changed_query, changed_scores, graph))
    unchanged = [0, 1, 3]
    assert torch.allclose(out[unchanged], other[unchanged], atol=1e-5)
    assert not torch.allclose(out[2], other[2], atol=1e-5)


@pytest.mark.parametrize("name", BUILT_IN)
def test_refiner_repr(name):
    refiner = _build(name)
    text = repr(refiner)
    assert text.startswith(type(refiner).__name__ + "(")
    assert f"dim={DIM}" in text


@pytest.mark.parametrize("name", BUILT_IN)
def test_refiner_registry_name(name):
    cls = get_refiner_class(name)
    assert cls.registry_name == name
    assert cls.display_name() == name


@pytest.mark.parametrize("readout", ["mean", "attention", "query"])
@pytest.mark.parametrize("name", [name for name in BUILT_IN if not issubclass(get_refiner_class(name), ParameterFreeRefiner)])
def test_readouts(name, readout):
    partners, keys, query, scores = _neighbourhoods()
    refiner = _build(name, readout=readout)
    out = refiner(build_neighbourhood_batch(partners, query=query, scores=scores, query_node=True))
    assert out.shape == (BATCH, DIM)
    assert torch.allclose(out.norm(dim=-1), torch.ones(BATCH), atol=1e-5)


def test_query_readout_returns_query_state():
    partners, _, query, scores = _neighbourhoods()
    refiner = _build("gcn", readout="query")
    graph_batch = build_neighbourhood_batch(partners, query=query, scores=scores, query_node=True)
    states = refiner.node_states(graph_batch)
    assert torch.allclose(refiner(graph_batch), F.normalize(states[graph_batch.query_index], dim=-1))


def test_query_readout_needs_query_node():
    partners, _, _, scores = _neighbourhoods()
    refiner = _build("gat", readout="query")
    with pytest.raises(ValueError, match="query_node=True"):
        refiner(build_neighbourhood_batch(partners, scores=scores))


def test_mean_readout_ignores_query_node():
    partners, _, query, scores = _neighbourhoods()
    refiner = _build("attention", num_layers=0)
    out = refiner(build_neighbourhood_batch(partners, query=query, scores=scores, query_node=True))
    assert torch.allclose(out, F.normalize(partners.mean(1), dim=-1), atol=1e-6)


@pytest.mark.parametrize("name", [name for name in BUILT_IN if issubclass(get_refiner_class(name), ParameterFreeRefiner)])
@pytest.mark.parametrize("readout", ["attention", "query"])
def test_parameter_free_rejects_readout(name, readout):
    with pytest.raises(ValueError, match=f"readout={readout!r} is invalid"):
        build_refiner(name, DIM, readout=readout)


@pytest.mark.parametrize("name", [name for name in BUILT_IN if issubclass(get_refiner_class(name), ParameterFreeRefiner)])
def test_parameter_free_has_no_parameters(name):
    refiner = build_refiner(name, DIM, hidden_dim=2 * DIM, num_layers=3, dropout=0.2)
    assert list(refiner.parameters()) == []


@pytest.mark.parametrize("side", ["partner", "query"])
@pytest.mark.parametrize("name", BUILT_IN)
def test_edge_weights_supported_or_rejected(name, side):
    partners, keys, _, scores = _neighbourhoods()
    graph_batch = build_neighbourhood_batch(partners, keys=keys, scores=scores, edge_weights=side)
    if get_refiner_class(name).supports_edge_weight:
        out = _build(name, use_edge_weight=True)(graph_batch)
        assert torch.isfinite(out).all()
    else:
        with pytest.raises(ValueError, match=f"refiner '{name}' cannot use edge weights"):
            _build(name, use_edge_weight=True)


def test_edge_weight_error_lists_capable_refiners():
    with pytest.raises(ValueError, match="supports them \\(attention, gat, gatv2, gcn, transformer"):
        build_refiner("sage", DIM, use_edge_weight=True)


@pytest.mark.parametrize("name", [name for name in BUILT_IN if get_refiner_class(name).supports_edge_weight])
def test_edge_weights_change_output(name):
    partners, keys, _, scores = _neighbourhoods()
    weighted = build_neighbourhood_batch(partners, keys=keys, scores=scores, edge_weights="query")
    reweighted = build_neighbourhood_batch(partners, keys=keys, scores=scores, edge_weights="query")
    reweighted.edge_weight = torch.rand(reweighted.edge_weight.shape, generator=torch.Generator().manual_seed(3))
    refiner = _build(name, use_edge_weight=True)
    assert not torch.allclose(refiner(weighted), refiner(reweighted), atol=1e-5)


@pytest.mark.parametrize("graph", GRAPHS)
def test_dense_gat_matches_gatconv(graph):
    # The GAT refiner evaluates PyG's GATConv as dense blocks; values and
    # gradients must be those of the layer's own per-edge forward.
    weighted = GRAPHS[graph].get("edge_weights", "none") != "none"
    graph_batch = _graph(*_neighbourhoods(), graph)
    torch.manual_seed(0)
    layer = GATConv(DIM, DIM, heads=4, concat=False, edge_dim=1 if weighted else None)
    edge_weight = graph_batch.edge_weight if weighted else None
    x = graph_batch.x.clone().requires_grad_()
    dense = dense_gat(layer, x, graph_batch, edge_weight)
    (dense_grad,) = torch.autograd.grad(dense.pow(2).sum(), x)
    if edge_weight is None:
        sparse = layer(x, graph_batch.edge_index)
    else:
        sparse = layer(x, graph_batch.edge_index, edge_weight.view(-1, 1))
    (sparse_grad,) = torch.autograd.grad(sparse.pow(2).sum(), x)
    assert torch.allclose(dense, sparse, atol=1e-6)
    assert torch.allclose(dense_grad, sparse_grad, atol=1e-5)


def test_dense_gat_handles_graphs_of_different_sizes():
    graphs = []
    for nodes, seed in [(3, 0), (6, 1), (1, 2), (4, 3)]:
        complete = torch.ones(nodes, nodes, dtype=torch.bool).fill_diagonal_(False).nonzero().T
        features = torch.randn(nodes, DIM, generator=torch.Generator().manual_seed(seed))
        graphs.append(Data(x=features, edge_index=complete))
    mixed = Batch.from_data_list(graphs)
    torch.manual_seed(0)
    layer = GATConv(DIM, DIM, heads=2, concat=False).eval()
    out = dense_gat(layer, mixed.x, mixed, None)
    assert out.shape == (mixed.num_nodes, DIM)
    assert torch.allclose(out, layer(mixed.x, mixed.edge_index), atol=1e-6)


def test_dense_gat_rejects_concatenated_heads():
    graph_batch = _graph(*_neighbourhoods(), "complete")
    layer = GATConv(DIM, DIM, heads=2, concat=True)
    with pytest.raises(ValueError, match="concat=False"):
        dense_gat(layer, graph_batch.x, graph_batch, None)


def test_edge_weight_refiner_needs_weighted_graph():
    partners, _, _, scores = _neighbourhoods()
    refiner = _build("gcn", use_edge_weight=True)
    with pytest.raises(ValueError, match="has no edge_weight"):
        refiner(build_neighbourhood_batch(partners, scores=scores))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dim=0), "dim=0 is invalid"),
        (dict(num_layers=-1), "num_layers=-1 is invalid"),
        (dict(hidden_dim=0), "hidden_dim=0 is invalid"),
        (dict(heads=0), "heads=0 is invalid"),
        (dict(dropout=1.0), "dropout=1.0 is invalid"),
        (dict(readout="max"), "unknown readout 'max'"),
    ],
)
def test_refiner_rejects_invalid_settings(kwargs, message):
    dim = kwargs.pop("dim", DIM)
    with pytest.raises(ValueError, match=message):
        build_refiner("gat", dim, **kwargs)


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="must be divisible by heads=3"):
        build_refiner("attention", DIM, heads=3)


def test_hidden_dim_projects_back():
    partners, _, _, scores = _neighbourhoods()
    refiner = _build("sage", hidden_dim=2 * DIM, num_layers=2)
    assert refiner(build_neighbourhood_batch(partners, scores=scores)).shape == (BATCH, DIM)
    assert refiner.layers[0].lin_l.in_channels == 2 * DIM


def test_num_layers_builds_that_many_layers():
    assert len(_build("gatv2", num_layers=3).layers) == 3


def test_mean_refiner_is_neighbour_mean():
    partners, keys, query, scores = _neighbourhoods()
    out = _build("mean")(build_neighbourhood_batch(partners, scores=scores))
    assert torch.allclose(out, F.normalize(partners.mean(1), dim=-1), atol=1e-6)


def test_weighted_refiner_is_softmax_average():
    partners, _, _, scores = _neighbourhoods()
    out = build_refiner("weighted", DIM, temperature=0.1)(build_neighbourhood_batch(partners, scores=scores))
    weights = (scores / 0.1).softmax(dim=1).unsqueeze(-1)
    assert torch.allclose(out, F.normalize((weights * partners).sum(1), dim=-1), atol=1e-6)


def test_weighted_refiner_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature=0 is invalid"):
        build_refiner("weighted", DIM, temperature=0)


def test_nearest_refiner_picks_best_score():
    partners, _, _, scores = _neighbourhoods()
    out = _build("nearest")(build_neighbourhood_batch(partners, scores=scores))
    best = scores.argmax(1)
    assert torch.allclose(out, partners[torch.arange(BATCH), best], atol=1e-6)


def test_registry_names_are_lenient():
    assert get_refiner_class("GATv2") is get_refiner_class("gat_v2")
    assert get_refiner_class("Attention") is get_refiner_class("attention")


def test_unknown_refiner_lists_choices():
    with pytest.raises(ValueError, match="registered refiners: .*attention"):
        build_refiner("graphormer", DIM)


def test_build_by_name_needs_dim():
    with pytest.raises(ValueError, match="needs dim"):
        build_refiner("gat")


def test_build_rejects_other_types():
    with pytest.raises(TypeError, match="got int"):
        build_refiner(3, DIM)


def test_built_module_passes_through():
    module = _build("gcn")
    assert build_refiner(module) is module


@pytest.fixture
def scratch_registry(monkeypatch):
    """Let a test register refiners without leaving them in the registry."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_DISPLAY_NAMES", dict(registry._DISPLAY_NAMES))


def test_register_custom_refiner(scratch_registry):
    @register_refiner("test-graphconv")
    class GraphConvRefiner(Refiner):
        supports_edge_weight = True

        def build_layer(self):
            return GraphConv(self.hidden_dim, self.hidden_dim)

    partners, keys, _, scores = _neighbourhoods()
    refiner = build_refiner("test_graphconv", DIM, num_layers=2, use_edge_weight=True)
    graph_batch = build_neighbourhood_batch(partners, keys=keys, scores=scores, edge_weights="partner")
    assert refiner(graph_batch).shape == (BATCH, DIM)
    assert "test-graphconv" in list_refiners()
    assert GraphConvRefiner.registry_name == "test-graphconv"


def test_register_twice_replaces_with_warning(scratch_registry, caplog):
    @register_refiner("test-twice")
    class First(Refiner):
        def build_layer(self):
            return GraphConv(self.hidden_dim, self.hidden_dim)

    @register_refiner("Test_Twice")
    class Second(First):
        pass

    assert get_refiner_class("test-twice") is Second
    assert "registered again" in caplog.text


def test_custom_registration_does_not_leak():
    assert "test-graphconv" not in list_refiners()
    assert "test-twice" not in list_refiners()
