"""Inner-product k-nearest-neighbour search behind one interface.

Every backend takes L2-normalised queries and keys and returns
``(similarities, positions)`` sorted by decreasing similarity, with positions
into the key matrix. Keys may carry ids (the training-pair index of each bank
entry); a query's own id can then be excluded from its neighbours, which keeps
a stale copy of the very pair being rectified out of its own neighbourhood.

Backends: ``torch`` (exact, any device), ``faiss`` (exact, FAISS flat kernel on
CPU), ``faiss-ivf`` (approximate, FAISS inverted-file index, see
:mod:`in2r_graph.search.ivf`) and ``auto``, which picks one of the two exact
backends with :func:`choose_exact_backend`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SearchFn = Callable[..., tuple[Tensor, Tensor]]
_BACKENDS: dict[str, SearchFn] = {}

AUTO_FAISS_MIN_KEYS = 256
"""Smallest bank for which ``auto`` picks FAISS flat on CPU.

Measured with ``benchmarks/perf/bench_search.py`` at one thread, batch 128
and k 10, on a 2-core AMD EPYC with AVX-512 (torch 2.13 with MKL, faiss-cpu
1.15 with OpenBLAS). There FAISS flat was faster than torch at every bank
size measured, from 256 to 1,048,576 keys, at D 256 and 1,024. Smaller banks
were not measured, so they keep ``torch``, and both backends take a fraction
of a millisecond there.

NOTE: measured on one machine. Another CPU or BLAS build may move the
crossover; ``bench_search.py`` measures it, and a backend can be named
explicitly instead of ``auto``.
"""

FAISS_BLAS_MIN_QUERIES = 4
"""Smallest query batch for which the FAISS flat backend uses its BLAS kernel.

FAISS computes distances with BLAS only when ``queries * D`` reaches
``faiss.cvar.distance_compute_blas_threshold`` (128,000 in faiss 1.15). A
batch of 128 queries at D 256 therefore fell back to a scalar loop, which
``benchmarks/perf/bench_search.py`` measured 2.5x (16,384 keys) to 9x
(65,536 keys) slower than the BLAS path. Single queries are faster on the
scalar loop.
"""


def register_backend(name: str) -> Callable[[SearchFn], SearchFn]:
    """Register a search function under ``name`` (decorator)."""

    def decorator(fn: SearchFn) -> SearchFn:
        _BACKENDS[name] = fn
        return fn

    return decorator


def list_backends() -> list[str]:
    """Return the registered backend names, ``auto`` included."""
    return sorted(_BACKENDS) + ["auto"]


def choose_exact_backend(queries: Tensor, keys: Tensor) -> str:
    """Return the exact backend that ``auto`` uses for these inputs.

    On a GPU it is ``faiss-gpu`` when the installed faiss has GPU support
    and ``torch`` on the device otherwise. On CPU, banks of at least
    :data:`AUTO_FAISS_MIN_KEYS` keys use ``faiss``, smaller ones ``torch``.
    """
    if queries.device.type == "cuda" and keys.device.type == "cuda" and "faiss-gpu" in _BACKENDS:
        return "faiss-gpu"
    if queries.device.type != "cpu" or keys.device.type != "cpu" or "faiss" not in _BACKENDS:
        return "torch"
    return "faiss" if keys.size(0) >= AUTO_FAISS_MIN_KEYS else "torch"


def check_inputs(queries: Tensor, keys: Tensor, k: int) -> None:
    """Raise ``ValueError`` unless queries are (B, D), keys are (Q, D) and k >= 1."""
    if queries.dim() != 2 or keys.dim() != 2 or queries.size(1) != keys.size(1):
        raise ValueError(
            f"search expects queries (B, D) and keys (Q, D) of one D; got {tuple(queries.shape)} "
            f"and {tuple(keys.shape)}"
        )
    if k < 1:
        raise ValueError(f"k={k} is invalid; expected at least 1 neighbour")


def candidates_needed(k: int, num_keys: int, query_ids: Tensor | None, key_ids: Tensor | None) -> int:
    """Return how many candidates a backend must fetch so that ``k`` survive the own-pair exclusion.

    A query can lose at most as many keys as the largest number of keys that
    share one id, so fetching ``k`` plus that number is always enough. This is
    far cheaper than comparing every query id with every key id.
    """
    copies = 0
    if query_ids is not None and key_ids is not None and key_ids.numel() > 0:
        copies = int(torch.bincount(key_ids.clamp(min=0)).max().item())
    return min(k + copies, num_keys)


def drop_own(
    sims: Tensor, positions: Tensor, k: int, query_ids: Tensor | None, key_ids: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Remove candidates that carry the query's own id or no key (-1) and keep the best ``k``.

    Raises:
        ValueError: if fewer than ``k`` candidates remain for some query.

    Shapes:
        sims, positions: (B, C) sorted by decreasing similarity -> (B, k), (B, k).
    """
    # FAISS marks a missing result with position -1 and a finite similarity (-FLT_MAX).
    dropped = positions < 0
    if query_ids is not None and key_ids is not None:
        own = key_ids.to(positions.device)[positions.clamp(min=0)] == query_ids.to(positions.device).view(-1, 1)
        dropped = dropped | own
    if dropped.any():
        sims = sims.masked_fill(dropped, float("-inf"))
        sims, order = sims.topk(min(k, sims.size(1)), dim=1)
        positions = positions.gather(1, order)
    else:
        sims, positions = sims[:, :k], positions[:, :k]
    if sims.size(1) < k or not torch.isfinite(sims).all():
        raise ValueError(
            f"the bank contains fewer than k={k} usable entries for some query "
            "(after excluding the query's own pair); check the bank size before searching"
        )
    return sims, positions


CPU_CHUNK_SIZE = 65536
"""Keys per chunk of the torch backend on CPU: a 32 MB similarity buffer at batch 128.

Smaller chunks (2,048 to 16,384 keys) were sometimes faster and sometimes
slower than one product over 65,536 keys in ``benchmarks/perf/bench_search.py``
on a shared 2-core AMD EPYC, so the default keeps the large, predictable one.
"""

OTHER_DEVICE_CHUNK_SIZE = 262144
"""Keys per chunk of the torch backend on GPUs and other devices, where large kernels run best."""

TOPK_BLOCK = 64
"""Width of the blocks of :func:`block_topk`."""


def block_topk(sims: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Return the ``k`` largest values of each row and their columns, sorted, like ``Tensor.topk``.

    Each row is cut into blocks of :data:`TOPK_BLOCK` columns. A block that
    contains one of the ``k`` largest values has a maximum at least as large
    as the k-th value. At most ``k`` blocks can contain one, so the ``k``
    largest values lie in the ``k`` blocks with the largest maxima. One
    vectorised max per block plus a top-k over ``k * TOPK_BLOCK`` candidates
    costs far less than a top-k over the whole row. Among equal values the
    chosen columns may differ from ``Tensor.topk``. Rows too short to gain
    fall back to ``Tensor.topk``.

    Shapes:
        sims (B, C) -> values (B, k), columns (B, k).
    """
    rows, columns = sims.shape
    blocks = columns // TOPK_BLOCK
    if blocks < 4 * k:
        return sims.topk(k, dim=1)
    body = sims[:, : blocks * TOPK_BLOCK].view(rows, blocks, TOPK_BLOCK)
    best_blocks = body.amax(dim=2).topk(k, dim=1).indices  # (B, k)
    candidates = body.gather(1, best_blocks.unsqueeze(-1).expand(-1, -1, TOPK_BLOCK)).reshape(rows, -1)  # (B, k * 64)
    candidate_columns = (best_blocks.unsqueeze(-1) * TOPK_BLOCK + torch.arange(TOPK_BLOCK, device=sims.device)).reshape(
        rows, -1
    )
    tail = columns - blocks * TOPK_BLOCK
    if tail:
        candidates = torch.cat([candidates, sims[:, -tail:]], dim=1)
        tail_columns = torch.arange(columns - tail, columns, device=sims.device).expand(rows, -1)
        candidate_columns = torch.cat([candidate_columns, tail_columns], dim=1)
    values, order = candidates.topk(k, dim=1)
    return values, candidate_columns.gather(1, order)


@register_backend("torch")
@torch.no_grad()
def torch_search(
    queries: Tensor,
    keys: Tensor,
    k: int,
    *,
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact search: one matrix multiply and one top-k per key chunk.

    Args:
        queries: query embeddings.
        keys: key embeddings (the bank).
        k: neighbours per query; must not exceed the number of usable keys.
        query_ids: optional id of each query; keys with the same id are skipped.
        key_ids: id of each key (needed with ``query_ids``).
        chunk_size: keys per chunk, which bounds the similarity buffer to
            ``B x chunk_size`` values. Each chunk's best candidates are merged
            with the best of the chunks before it. Default
            :data:`CPU_CHUNK_SIZE` on CPU, :data:`OTHER_DEVICE_CHUNK_SIZE` elsewhere.

    With ids, each backend first takes ``k`` plus the largest number of bank
    copies of one id, then drops the query's own entries.

    Shapes:
        queries (B, D), keys (Q, D), ids (B,) and (Q,) -> sims (B, k), positions (B, k).
    """
    check_inputs(queries, keys, k)
    if chunk_size is None:
        chunk_size = CPU_CHUNK_SIZE if queries.device.type == "cpu" else OTHER_DEVICE_CHUNK_SIZE
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is invalid; expected a positive number of keys")
    keys = keys.to(queries.dtype)
    needed = candidates_needed(k, keys.size(0), query_ids, key_ids)
    best_sims, best_positions = None, None
    for start in range(0, keys.size(0), chunk_size):
        sims = queries @ keys[start : start + chunk_size].T  # (B, chunk)
        chunk_sims, chunk_positions = block_topk(sims, min(needed, sims.size(1)))  # (B, needed)
        if start:
            chunk_positions += start
        if best_sims is None:
            best_sims, best_positions = chunk_sims, chunk_positions
            continue
        merged_sims = torch.cat([best_sims, chunk_sims], dim=1)  # (B, 2 * needed)
        merged_positions = torch.cat([best_positions, chunk_positions], dim=1)
        best_sims, order = merged_sims.topk(min(needed, merged_sims.size(1)), dim=1)
        best_positions = merged_positions.gather(1, order)
    return drop_own(best_sims, best_positions, k, query_ids, key_ids)


@contextmanager
def faiss_blas_for_batches(faiss_module, dim: int) -> Iterator[None]:
    """Make FAISS use its BLAS kernel for batches of :data:`FAISS_BLAS_MIN_QUERIES` queries or more.

    The threshold is a process-wide FAISS setting, so it is restored on exit.

    NOTE: another thread that calls FAISS while this context is open sees the
    lowered threshold too. Its results stay exact; only its speed changes.
    """
    previous = faiss_module.cvar.distance_compute_blas_threshold
    faiss_module.cvar.distance_compute_blas_threshold = FAISS_BLAS_MIN_QUERIES * dim
    try:
        yield
    finally:
        faiss_module.cvar.distance_compute_blas_threshold = previous


def to_faiss_array(tensor: Tensor) -> np.ndarray:
    """Return a C-contiguous float32 numpy view of ``tensor`` (a copy only when needed)."""
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


@register_backend("faiss")
@torch.no_grad()
def faiss_search(
    queries: Tensor,
    keys: Tensor,
    k: int,
    *,
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact search with FAISS's flat inner-product kernel (``faiss.knn``).

    Runs on CPU float32 arrays: float32 CPU tensors are shared without a copy,
    others are converted. Results come back on the queries' device and dtype.
    No index is kept between calls, because the bank changes at every
    training step and copying it into an ``IndexFlatIP`` would cost a full
    pass over the keys while ``faiss.knn`` reads them in place. The number of
    threads is FAISS's own setting (``faiss.omp_set_num_threads``).

    Shapes:
        queries (B, D), keys (Q, D) -> sims (B, k), positions (B, k).
    """
    import faiss

    check_inputs(queries, keys, k)
    needed = candidates_needed(k, keys.size(0), query_ids, key_ids)
    query_array, key_array = to_faiss_array(queries), to_faiss_array(keys)
    with faiss_blas_for_batches(faiss, keys.size(1)):
        sims, positions = faiss.knn(query_array, key_array, needed, metric=faiss.METRIC_INNER_PRODUCT)
    sims = torch.from_numpy(sims).to(queries.device, queries.dtype)
    positions = torch.from_numpy(positions).to(queries.device)
    return drop_own(sims, positions, k, query_ids, key_ids)


def knn_search(
    queries: Tensor,
    keys: Tensor,
    k: int,
    *,
    backend: str = "torch",
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
    **options,
) -> tuple[Tensor, Tensor]:
    """Find the ``k`` keys with the highest inner product for each query.

    Args:
        queries: query embeddings, L2-normalised.
        keys: key embeddings (the bank), L2-normalised.
        k: neighbours per query.
        backend: ``torch`` (exact, any device), ``faiss`` (exact, CPU FAISS),
            ``faiss-ivf`` (approximate, CPU FAISS inverted-file index) or
            ``auto`` (the faster exact backend, see :func:`choose_exact_backend`).
        query_ids: optional id of each query; keys with the same id are skipped.
        key_ids: id of each key (needed with ``query_ids``).
        **options: settings of the named backend: ``chunk_size`` for
            ``torch``, ``nlist`` and ``nprobe`` for ``faiss-ivf``. ``auto``
            takes none, because it may pick either exact backend.

    Shapes:
        queries (B, D), keys (Q, D) -> sims (B, k), positions (B, k), sorted
        by decreasing similarity.
    """
    if backend == "auto":
        if options:
            raise ValueError(
                f"backend 'auto' takes no options, got {sorted(options)}; name the backend to pass them to"
            )
        backend = choose_exact_backend(queries, keys)
    if backend not in _BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}; expected one of {', '.join(list_backends())}")
    return _BACKENDS[backend](queries, keys, k, query_ids=query_ids, key_ids=key_ids, **options)
