import pytest
import torch
import torch.nn.functional as F

from in2r_graph.search import faiss_search, knn_search, list_backends, torch_search


def _data(batch: int, bank: int, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    queries = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    keys = F.normalize(torch.randn(bank, dim, generator=generator), dim=-1)
    return queries, keys


@pytest.mark.parametrize("bank,dim,k", [(50, 8, 1), (500, 32, 10), (2000, 64, 20)])
def test_faiss_equals_torch_topk(bank, dim, k):
    queries, keys = _data(16, bank, dim)
    expected_sims, expected_ids = (queries @ keys.T).topk(k, dim=1)
    torch_sims, torch_ids = torch_search(queries, keys, k)
    faiss_sims, faiss_ids = faiss_search(queries, keys, k)
    assert torch.equal(torch_ids, expected_ids)
    assert torch.equal(faiss_ids, expected_ids)
    assert torch.allclose(torch_sims, expected_sims, atol=1e-5)
    assert torch.allclose(faiss_sims, expected_sims, atol=1e-5)


def test_torch_search_chunks_match_unchunked():
    queries, keys = _data(8, 1000, 16)
    full = torch_search(queries, keys, 7)
    chunked = torch_search(queries, keys, 7, chunk_size=64)
    assert torch.equal(full[1], chunked[1])
    assert torch.allclose(full[0], chunked[0])


@pytest.mark.parametrize("backend", ["torch", "faiss", "auto"])
def test_search_excludes_query_own_pair(backend):
    queries, keys = _data(6, 40, 8)
    keys[:6] = queries  # each query's own pair is its best match
    key_ids = torch.arange(40)
    key_ids[30] = 2  # a second, stale copy of pair 2
    query_ids = torch.arange(6)
    sims, positions = knn_search(queries, keys, 5, backend=backend, query_ids=query_ids, key_ids=key_ids)
    found_ids = key_ids[positions]
    assert positions.shape == (6, 5)
    for row in range(6):
        assert row not in found_ids[row].tolist()
    expected = (queries @ keys.T).masked_fill(query_ids.view(-1, 1) == key_ids.view(1, -1), float("-inf"))
    assert torch.equal(positions, expected.topk(5, dim=1).indices)


def test_search_raises_when_bank_too_small():
    queries, keys = _data(2, 3, 4)
    with pytest.raises(ValueError, match="fewer than k=5"):
        torch_search(queries, keys, 5)


def test_search_rejects_bad_inputs():
    queries, keys = _data(2, 10, 4)
    with pytest.raises(ValueError, match="k=0"):
        knn_search(queries, keys, 0)
    with pytest.raises(ValueError, match="one D"):
        knn_search(queries, keys[:, :3], 2)
    with pytest.raises(ValueError, match="unknown search backend 'annoy'"):
        knn_search(queries, keys, 2, backend="annoy")


def test_backends_listed():
    assert {"torch", "faiss", "auto"} <= set(list_backends())
