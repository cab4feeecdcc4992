"""Approximate search with a FAISS inverted-file index (``IndexIVFFlat``, inner product).

An IVF index clusters the keys into ``nlist`` cells with k-means and scans,
for each query, only the ``nprobe`` cells whose centroids are most similar to
it. A search then reads about ``nprobe / nlist`` of the keys, at the price of
missing neighbours that sit in cells it did not visit (recall below 1).

Building the index runs k-means and assigns every key to a cell, which costs
more than several exact searches. The index pays off when many searches reuse
the same keys: a frozen bank, evaluation, or a caller that keeps a
:class:`FaissIVFIndex` and rebuilds it every few hundred steps. The
``faiss-ivf`` backend of :func:`~in2r_graph.search.knn_search` keeps the
indexes of the last :data:`MAX_CACHED_INDEXES` key matrices and reuses one while its
keys are unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict

import torch
from torch import Tensor

from .knn import (
    candidates_needed,
    check_inputs,
    drop_own,
    faiss_blas_for_batches,
    faiss_search,
    register_backend,
    to_faiss_array,
)

logger = logging.getLogger(__name__)

DEFAULT_NPROBE = 32
"""Cells scanned per query when the caller does not set ``nprobe``.

On 35,000 real caption embeddings (all-MiniLM-L6-v2 of the Flickr8k train
and dev captions, 748 cells) ``benchmarks/perf/bench_search.py`` measured
recall@10 0.975 at 32 cells and 0.944 at 16.

NOTE: recall at a given ``nprobe`` depends on how clustered the keys are:
keys spread uniformly over the sphere need far more cells. Raise ``nprobe``
when recall matters more than speed.
"""

TRAIN_POINTS_PER_LIST = 39
"""Keys sampled per cell to train the k-means quantizer (the fewest for which FAISS does not warn)."""

MAX_CACHED_INDEXES = 2
"""Indexes the ``faiss-ivf`` backend keeps, one per key matrix (two co-trained networks)."""

_FINGERPRINT_ROWS = 64


def default_nlist(num_keys: int) -> int:
    """Return the default number of cells: ``4 sqrt(Q)``, at most ``Q / 39``, at least 1.

    More cells make each probed cell smaller, so a search reads fewer keys
    at one ``nprobe``, but the k-means training grows with the square of the
    number of cells.
    """
    return max(1, min(round(4 * math.sqrt(num_keys)), num_keys // TRAIN_POINTS_PER_LIST))


class FaissIVFIndex:
    """An inverted-file index over a fixed key matrix.

    The index keeps its own float32 copy of the keys, so later changes to
    ``keys`` do not reach it: build a new index after the keys change.

    Args:
        keys: key embeddings, L2-normalised.
        nlist: number of k-means cells; default :func:`default_nlist`.
        nprobe: cells scanned per query unless :meth:`search` is given another.
        train_points_per_list: keys sampled per cell to train k-means.
        seed: seed of the k-means sampling and initialisation.

    Shapes:
        keys: (Q, D).
    """

    def __init__(
        self,
        keys: Tensor,
        *,
        nlist: int | None = None,
        nprobe: int = DEFAULT_NPROBE,
        train_points_per_list: int = TRAIN_POINTS_PER_LIST,
        seed: int = 0,
    ) -> None:
        import faiss

        if keys.dim() != 2 or keys.size(0) == 0:
            raise ValueError(f"keys must have shape (Q, D) with Q >= 1; got {tuple(keys.shape)}")
        num_keys, dim = keys.shape
        nlist = default_nlist(num_keys) if nlist is None else nlist
        if not 1 <= nlist <= num_keys:
            raise ValueError(f"nlist={nlist} is invalid; expected between 1 and the number of keys ({num_keys})")
        _check_nprobe(nprobe)
        if train_points_per_list < 1:
            raise ValueError(f"train_points_per_list={train_points_per_list} is invalid; expected at least 1")

        started = time.perf_counter()
        key_array = to_faiss_array(keys)
        # The index does not own its quantizer, so this object keeps it alive.
        self._quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(self._quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        self.index.cp.max_points_per_centroid = train_points_per_list
        with faiss_blas_for_batches(faiss, dim):
            self.index.train(key_array)
            self.index.add(key_array)
        self.index.nprobe = nprobe
        self.num_keys = int(num_keys)
        self.dim = int(dim)
        self.nlist = int(nlist)
        self.build_seconds = time.perf_counter() - started
        logger.debug(
            "built an IVF index over %d keys of dim %d with %d cells in %.2fs", num_keys, dim, nlist, self.build_seconds
        )

    @property
    def nprobe(self) -> int:
        """Cells scanned per query by default."""
        return int(self.index.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        _check_nprobe(value)
        self.index.nprobe = value

    @torch.no_grad()
    def search(self, queries: Tensor, k: int, *, nprobe: int | None = None) -> tuple[Tensor, Tensor]:
        """Return the ``k`` best keys found in the ``nprobe`` nearest cells of each query.

        A query whose scanned cells contain fewer than ``k`` keys gets position
        -1 and similarity ``-inf`` in the missing slots.

        Shapes:
            queries (B, D) -> sims (B, k), positions (B, k), on the queries' device.
        """
        import faiss

        if queries.dim() != 2 or queries.size(1) != self.dim:
            raise ValueError(f"queries must have shape (B, {self.dim}); got {tuple(queries.shape)}")
        if k < 1:
            raise ValueError(f"k={k} is invalid; expected at least 1 neighbour")
        if nprobe is not None:
            _check_nprobe(nprobe)
        parameters = faiss.SearchParametersIVF(nprobe=nprobe if nprobe is not None else self.nprobe)
        with faiss_blas_for_batches(faiss, self.dim):
            sims, positions = self.index.search(to_faiss_array(queries), k, params=parameters)
        sims = torch.from_numpy(sims)
        positions = torch.from_numpy(positions)
        sims = sims.masked_fill(positions < 0, float("-inf"))
        return sims.to(queries.device, queries.dtype), positions.to(queries.device)

    def __repr__(self) -> str:
        return f"FaissIVFIndex(num_keys={self.num_keys}, dim={self.dim}, nlist={self.nlist}, nprobe={self.nprobe})"


def _check_nprobe(nprobe: int) -> None:
    if nprobe < 1:
        raise ValueError(f"nprobe={nprobe} is invalid; expected at least 1 cell")


_CACHE: OrderedDict[tuple, FaissIVFIndex] = OrderedDict()


def _fingerprint(keys: Tensor, nlist: int | None) -> tuple | None:
    """Return a value that changes whenever ``keys`` may have changed, or None when none can be made.

    In-place writes raise the tensor's version counter, which views share
    with their base. A new tensor that reuses freed memory is detected by a
    hash of a fixed sample of rows.

    NOTE: a new tensor at the same address, with the same version and the
    same sampled rows but other rows different, would reuse a stale index.
    Call :func:`clear_ivf_cache` after rebuilding keys in place of old ones
    that way.
    """
    if keys.is_inference():
        return None  # inference tensors have no version counter
    rows = torch.linspace(0, keys.size(0) - 1, steps=min(keys.size(0), _FINGERPRINT_ROWS)).long()
    sample = keys.detach()[rows.to(keys.device)].to("cpu", torch.float32).numpy().tobytes()
    return (
        keys.data_ptr(),
        tuple(keys.shape),
        keys.stride(),
        keys.dtype,
        str(keys.device),
        keys._version,
        hashlib.sha1(sample).hexdigest(),
        nlist,
    )


def cached_ivf_index(keys: Tensor, nlist: int | None = None) -> FaissIVFIndex:
    """Return the cached index of ``keys``, building it when the keys changed."""
    fingerprint = _fingerprint(keys, nlist)
    if fingerprint is not None and fingerprint in _CACHE:
        _CACHE.move_to_end(fingerprint)
        return _CACHE[fingerprint]
    index = FaissIVFIndex(keys, nlist=nlist)
    logger.debug("faiss-ivf: keys changed or not seen before, index rebuilt in %.2fs", index.build_seconds)
    if fingerprint is not None:
        _CACHE[fingerprint] = index
        while len(_CACHE) > MAX_CACHED_INDEXES:
            _CACHE.popitem(last=False)
    return index


def clear_ivf_cache() -> None:
    """Drop every index kept by the ``faiss-ivf`` backend."""
    _CACHE.clear()


@register_backend("faiss-ivf")
@torch.no_grad()
def ivf_search(
    queries: Tensor,
    keys: Tensor,
    k: int,
    *,
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Approximate search with a cached :class:`FaissIVFIndex` over ``keys``.

    The index is built on the first call with these keys and reused while
    they are unchanged, so a bank that changes at every step rebuilds it at
    every step, which is slower than exact search. Queries whose scanned
    cells hold too few keys are searched exactly instead.

    Args:
        nlist: number of cells (default :func:`default_nlist`); part of the cache key.
        nprobe: cells scanned per query (default :data:`DEFAULT_NPROBE`).

    Shapes:
        queries (B, D), keys (Q, D) -> sims (B, k), positions (B, k).
    """
    check_inputs(queries, keys, k)
    needed = candidates_needed(k, keys.size(0), query_ids, key_ids)
    index = cached_ivf_index(keys, nlist)
    sims, positions = index.search(queries, needed, nprobe=nprobe)
    short = (positions < 0).any(dim=1)  # (B,)
    if short.any():
        rows = short.nonzero().squeeze(1)
        logger.debug("faiss-ivf: %d queries found fewer than %d keys in their cells; searched exactly", len(rows), needed)
        exact_sims, exact_positions = faiss_search(queries[rows], keys, needed)
        sims[rows.to(sims.device)] = exact_sims.to(sims.device, sims.dtype)
        positions[rows.to(positions.device)] = exact_positions.to(positions.device)
    return drop_own(sims, positions, k, query_ids, key_ids)
