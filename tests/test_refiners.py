import pytest
import torch
import torch.nn.functional as F

from in2r_graph.graphs import build_neighbourhood_batch
from in2r_graph.refiners import Refiner, build_refiner, get_refiner_class, list_refiners, register_refiner

DIM = 16


def _neighbourhoods(batch=4, k=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    partners = F.normalize(torch.randn(batch, k, DIM, generator=generator), dim=-1)
    scores = torch.rand(batch, k, generator=generator)
    return partners, scores


def _build(name, **kwargs):
    torch.manual_seed(0)
    return build_refiner(name, DIM, heads=4, **kwargs).eval()


@pytest.mark.parametrize("name", list_refiners())
def test_refiner_contract(name):
    partners, scores = _neighbourhoods()
    refiner = _build(name)
    out = refiner(build_neighbourhood_batch(partners, scores=scores))
    assert out.shape == (4, DIM)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert name in repr(refiner).lower() or type(refiner).__name__ in repr(refiner)


@pytest.mark.parametrize("name", list_refiners())
def test_refiner_gradients_reach_parameters(name):
    partners, scores = _neighbourhoods()
    refiner = _build(name).train()
    partners = partners.clone().requires_grad_(True)
    out = refiner(build_neighbourhood_batch(partners, scores=scores))
    out.sum().backward()
    for parameter_name, parameter in refiner.named_parameters():
        assert parameter.grad is not None, f"{parameter_name} received no gradient"
    if name != "nearest":
        assert partners.grad is not None


@pytest.mark.parametrize("name", list_refiners())
def test_refiner_neighbour_order_invariant(name):
    partners, scores = _neighbourhoods()
    order = torch.tensor([3, 0, 4, 1, 2])
    refiner = _build(name)
    out = refiner(build_neighbourhood_batch(partners, scores=scores))
    shuffled = refiner(build_neighbourhood_batch(partners[:, order], scores=scores[:, order]))
    assert torch.allclose(out, shuffled, atol=1e-5)


@pytest.mark.parametrize("name", list_refiners())
def test_refiner_batch_independent(name):
    partners, scores = _neighbourhoods()
    refiner = _build(name)
    out = refiner(build_neighbourhood_batch(partners, scores=scores))
    changed = partners.clone()
    changed[2] = F.normalize(torch.randn(5, DIM), dim=-1)
    other = refiner(build_neighbourhood_batch(changed, scores=scores))
    unchanged = [0, 1, 3]
    assert torch.allclose(out[unchanged], other[unchanged], atol=1e-5)


@pytest.mark.parametrize("readout", ["mean", "attention", "query"])
def test_readouts(readout):
    partners, scores = _neighbourhoods()
    query = F.normalize(torch.randn(4, DIM), dim=-1)
    refiner = _build("gat", readout=readout)
    out = refiner(build_neighbourhood_batch(partners, query=query, scores=scores, query_node=True))
    assert out.shape == (4, DIM)


def test_edge_weights_supported_or_rejected():
    partners, scores = _neighbourhoods()
    graph_batch = build_neighbourhood_batch(partners, keys=partners, scores=scores, edge_weights="partner")
    for name in list_refiners():
        cls = get_refiner_class(name)
        if cls.supports_edge_weight:
            out = _build(name, use_edge_weight=True)(graph_batch)
            assert torch.isfinite(out).all()
        else:
            with pytest.raises(ValueError, match="cannot use edge weights"):
                _build(name, use_edge_weight=True)


def test_mean_refiner_is_neighbour_mean():
    partners, scores = _neighbourhoods()
    out = _build("mean")(build_neighbourhood_batch(partners, scores=scores))
    assert torch.allclose(out, F.normalize(partners.mean(1), dim=-1), atol=1e-6)


def test_nearest_refiner_picks_best_score():
    partners, scores = _neighbourhoods()
    out = _build("nearest")(build_neighbourhood_batch(partners, scores=scores))
    best = scores.argmax(1)
    assert torch.allclose(out, partners[torch.arange(4), best], atol=1e-6)


def test_registry_names_are_lenient():
    assert get_refiner_class("GATv2") is get_refiner_class("gat_v2")
    assert get_refiner_class("Attention") is get_refiner_class("attention")


def test_unknown_refiner_lists_choices():
    with pytest.raises(ValueError, match="registered refiners: .*attention"):
        build_refiner("graphormer", DIM)


def test_built_module_passes_through():
    module = _build("gcn")
    assert build_refiner(module) is module


def test_register_custom_refiner():
    from torch_geometric.nn import GraphConv

    @register_refiner("test-graphconv")
    class GraphConvRefiner(Refiner):
        supports_edge_weight = True

        def build_layer(self):
            return GraphConv(self.hidden_dim, self.hidden_dim)

    partners, scores = _neighbourhoods()
    refiner = build_refiner("test_graphconv", DIM, num_layers=2)
    assert refiner(build_neighbourhood_batch(partners, scores=scores)).shape == (4, DIM)
    assert "test-graphconv" in list_refiners()
