import pytest
import torch
import torch.nn.functional as F

from in2r_graph.search import (
    AUTO_FAISS_MIN_KEYS,
    FaissIVFIndex,
    choose_exact_backend,
    clear_ivf_cache,
    default_nlist,
    faiss_search,
    knn_search,
    list_backends,
    torch_search,
)
from in2r_graph.search.ivf import cached_ivf_index
from in2r_graph.search.knn import block_topk, drop_own


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


@pytest.mark.parametrize("backend", ["torch", "faiss", "faiss-ivf", "auto"])
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
    with pytest.raises(ValueError, match="'auto' takes no options"):
        knn_search(queries, keys, 2, backend="auto", nprobe=4)


def test_backends_listed():
    assert {"torch", "faiss", "faiss-ivf", "auto"} <= set(list_backends())


def test_block_topk_matches_topk():
    generator = torch.Generator().manual_seed(3)
    for columns in (64 * 40, 64 * 40 + 17, 5000, 30):
        sims = torch.randn(9, columns, generator=generator)
        expected = sims.topk(10, dim=1)
        values, positions = block_topk(sims, 10)
        assert torch.equal(positions, expected.indices), columns
        assert torch.equal(values, expected.values), columns


@pytest.mark.parametrize("chunk_size", [None, 5, 1000, 4096])
def test_torch_search_chunks_exact(chunk_size):
    queries, keys = _data(5, 9000, 8, seed=4)
    expected = (queries @ keys.T).topk(12, dim=1)
    sims, positions = torch_search(queries, keys, 12, chunk_size=chunk_size)
    assert torch.equal(positions, expected.indices)
    assert torch.allclose(sims, expected.values, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3, 4, 128])
def test_faiss_blas_and_scalar_paths_exact(batch):
    queries, keys = _data(batch, 3000, 32, seed=5)
    expected = (queries @ keys.T).topk(10, dim=1).indices
    _, positions = faiss_search(queries, keys, 10)
    assert torch.equal(positions, expected)


def test_faiss_search_restores_blas_threshold():
    import faiss

    before = faiss.cvar.distance_compute_blas_threshold
    faiss_search(*_data(8, 100, 16), 3)
    assert faiss.cvar.distance_compute_blas_threshold == before


def test_auto_choice_follows_size_and_device():
    queries, keys = _data(4, AUTO_FAISS_MIN_KEYS, 8)
    assert choose_exact_backend(queries, keys) == "faiss"
    assert choose_exact_backend(queries, keys[: AUTO_FAISS_MIN_KEYS - 1]) == "torch"
    assert choose_exact_backend(queries.to("meta"), keys.to("meta")) == "torch"


def test_auto_equals_torch():
    queries, keys = _data(16, 5000, 24, seed=6)
    assert torch.equal(knn_search(queries, keys, 7, backend="auto")[1], torch_search(queries, keys, 7)[1])


def test_drop_own_skips_missing_results():
    sims = torch.tensor([[0.9, 0.5, -3.4e38]])
    positions = torch.tensor([[4, 2, -1]])
    with pytest.raises(ValueError, match="fewer than k=3"):
        drop_own(sims, positions, 3, None, None)
    kept_sims, kept_positions = drop_own(sims, positions, 2, None, None)
    assert kept_positions.tolist() == [[4, 2]]
    assert torch.equal(kept_sims, sims[:, :2])


def test_ivf_full_probe_is_exact():
    clear_ivf_cache()
    queries, keys = _data(20, 4000, 16, seed=7)
    expected = (queries @ keys.T).topk(10, dim=1)
    nlist = default_nlist(4000)
    sims, positions = knn_search(queries, keys, 10, backend="faiss-ivf", nprobe=nlist)
    assert torch.equal(positions, expected.indices)
    assert torch.allclose(sims, expected.values, atol=1e-5)


def test_ivf_recall_grows_with_nprobe():
    queries, keys = _data(32, 4000, 16, seed=8)
    exact = torch_search(queries, keys, 10)[1]
    index = FaissIVFIndex(keys, nlist=64)

    def recall(nprobe: int) -> float:
        found = index.search(queries, 10, nprobe=nprobe)[1]
        return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, exact)) / exact.numel()

    assert recall(1) < recall(16)
    assert recall(64) == 1.0


def test_ivf_cache_reuses_and_rebuilds():
    clear_ivf_cache()
    queries, keys = _data(4, 2000, 8, seed=9)
    first = cached_ivf_index(keys)
    assert cached_ivf_index(keys) is first
    keys[0] = queries[0]  # an in-place write must not reuse the stale index
    rebuilt = cached_ivf_index(keys)
    assert rebuilt is not first
    _, positions = knn_search(queries, keys, 1, backend="faiss-ivf", nprobe=rebuilt.nlist)
    assert positions[0, 0].item() == 0
    assert cached_ivf_index(keys, nlist=10) is not rebuilt


def test_ivf_short_cells_fall_back_to_exact():
    queries, keys = _data(6, 400, 8, seed=10)
    expected = (queries @ keys.T).topk(50, dim=1).indices
    # 10 cells of about 40 keys and one probed cell: most queries see fewer than 50 keys.
    sims, positions = knn_search(queries, keys, 50, backend="faiss-ivf", nlist=10, nprobe=1)
    assert bool((positions >= 0).all())
    assert bool(torch.isfinite(sims).all())
    index = FaissIVFIndex(keys, nlist=10)
    short = (index.search(queries, 50, nprobe=1)[1] < 0).any(dim=1)
    assert bool(short.any())
    assert torch.equal(positions[short], expected[short])


def test_ivf_rejects_bad_settings():
    queries, keys = _data(2, 100, 8)
    with pytest.raises(ValueError, match="nlist=101"):
        FaissIVFIndex(keys, nlist=101)
    with pytest.raises(ValueError, match="nprobe=0"):
        FaissIVFIndex(keys, nlist=2, nprobe=0)
    index = FaissIVFIndex(keys, nlist=2)
    with pytest.raises(ValueError, match=r"shape \(B, 8\)"):
        index.search(queries[:, :4], 3)
    with pytest.raises(ValueError, match="k=0"):
        index.search(queries, 0)
