"""Inner-product k-nearest-neighbour search behind one interface.

Every backend takes L2-normalised queries and keys and returns
``(similarities, positions)`` sorted by decreasing similarity, with positions
into the key matrix. Keys may carry ids (the training-pair index of each bank
entry); a query's own id can then be excluded from its neighbours, which keeps
a stale copy of the very pair being rectified out of its own neighbourhood.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SearchFn = Callable[..., tuple[Tensor, Tensor]]
_BACKENDS: dict[str, SearchFn] = {}

# NOTE: a rough crossover measured on one 2-core CPU (FAISS flat 1.17x faster
# than torch at 65,536 x 1,024, 8x slower at 16,384 x 256); not tuned per machine.
AUTO_FAISS_MIN_ELEMENTS = 65536 * 1024


def register_backend(name: str) -> Callable[[SearchFn], SearchFn]:
    """Register a search function under ``name`` (decorator)."""

    def decorator(fn: SearchFn) -> SearchFn:
        _BACKENDS[name] = fn
        return fn

    return decorator


def list_backends() -> list[str]:
    """Return the registered backend names, ``auto`` included."""
    return sorted(_BACKENDS) + ["auto"]


def _check_inputs(queries: Tensor, keys: Tensor, k: int) -> None:
    if queries.dim() != 2 or keys.dim() != 2 or queries.size(1) != keys.size(1):
        raise ValueError(
            f"search expects queries (B, D) and keys (Q, D) of one D; got {tuple(queries.shape)} "
            f"and {tuple(keys.shape)}"
        )
    if k < 1:
        raise ValueError(f"k={k} is invalid; expected at least 1 neighbour")


def _excluded_count(query_ids: Tensor | None, key_ids: Tensor | None) -> int:
    """Return the largest number of keys that share an id with one query."""
    if query_ids is None or key_ids is None or key_ids.numel() == 0:
        return 0
    matches = query_ids.view(-1, 1) == key_ids.view(1, -1)  # (B, Q)
    return int(matches.sum(dim=1).max().item())


@register_backend("torch")
@torch.no_grad()
def torch_search(
    queries: Tensor,
    keys: Tensor,
    k: int,
    *,
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
    chunk_size: int = 262144,
) -> tuple[Tensor, Tensor]:
    """Exact search: one matrix multiply per key chunk, then ``topk``.

    Args:
        queries: query embeddings.
        keys: key embeddings (the bank).
        k: neighbours per query; must not exceed the number of usable keys.
        query_ids: optional id of each query; keys with the same id are skipped.
        key_ids: id of each key (needed with ``query_ids``).
        chunk_size: keys per chunk, which bounds memory to ``B x chunk_size``.

    Shapes:
        queries (B, D), keys (Q, D), ids (B,) and (Q,) -> sims (B, k), positions (B, k).
    """
    _check_inputs(queries, keys, k)
    keys = keys.to(queries.dtype)
    best_sims, best_positions = None, None
    for start in range(0, keys.size(0), chunk_size):
        sims = queries @ keys[start : start + chunk_size].T  # (B, chunk)
        if query_ids is not None and key_ids is not None:
            same = query_ids.view(-1, 1) == key_ids[start : start + chunk_size].view(1, -1)
            sims = sims.masked_fill(same, float("-inf"))
        positions = torch.arange(start, start + sims.size(1), device=sims.device).expand_as(sims)
        if best_sims is not None:
            sims = torch.cat([best_sims, sims], dim=1)
            positions = torch.cat([best_positions, positions], dim=1)
        top = min(k, sims.size(1))
        best_sims, order = sims.topk(top, dim=1)
        best_positions = positions.gather(1, order)
    _check_found(best_sims, k)
    return best_sims, best_positions


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

    Runs on CPU arrays; results come back on the queries' device. When ids
    are given it asks for extra neighbours and drops the query's own entries.

    Shapes:
        queries (B, D), keys (Q, D) -> sims (B, k), positions (B, k).
    """
    import faiss

    _check_inputs(queries, keys, k)
    extra = _excluded_count(query_ids, key_ids)
    wanted = min(k + extra, keys.size(0))
    query_array = np.ascontiguousarray(queries.detach().float().cpu().numpy())
    key_array = np.ascontiguousarray(keys.detach().float().cpu().numpy())
    sims, positions = faiss.knn(query_array, key_array, wanted, metric=faiss.METRIC_INNER_PRODUCT)
    sims = torch.from_numpy(sims).to(queries.device)
    positions = torch.from_numpy(positions).to(queries.device)
    if extra:
        own = key_ids.to(queries.device)[positions.clamp(min=0)] == query_ids.view(-1, 1)
        sims = sims.masked_fill(own | (positions < 0), float("-inf"))
        sims, order = sims.topk(min(k, sims.size(1)), dim=1)
        positions = positions.gather(1, order)
    _check_found(sims, k)
    return sims.to(queries.dtype), positions


def _check_found(sims: Tensor, k: int) -> None:
    if sims.size(1) < k or not torch.isfinite(sims).all():
        raise ValueError(
            f"the bank holds fewer than k={k} usable entries for some query "
            "(after excluding the query's own pair); check the bank size before searching"
        )


def knn_search(
    queries: Tensor,
    keys: Tensor,
    k: int,
    *,
    backend: str = "torch",
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Find the ``k`` keys with the highest inner product for each query.

    Args:
        backend: ``torch`` (exact, any device), ``faiss`` (exact, CPU FAISS)
            or ``auto`` (FAISS for large banks, torch otherwise).

    Shapes:
        queries (B, D), keys (Q, D) -> sims (B, k), positions (B, k), sorted
        by decreasing similarity.
    """
    if backend == "auto":
        large = keys.size(0) * keys.size(1) >= AUTO_FAISS_MIN_ELEMENTS
        backend = "faiss" if large and queries.device.type == "cpu" else "torch"
    if backend not in _BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}; expected one of {', '.join(list_backends())}")
    return _BACKENDS[backend](queries, keys, k, query_ids=query_ids, key_ids=key_ids)
