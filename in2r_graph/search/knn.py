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


def _max_copies(key_ids: Tensor | None) -> int:
    """Return the largest number of keys that share one id (0 without ids).

    A query can lose at most this many keys to the own-pair exclusion, so
    asking each backend for ``k + copies`` candidates is always enough. This is
    far cheaper than comparing every query id with every key id.
    """
    if key_ids is None or key_ids.numel() == 0:
        return 0
    return int(torch.bincount(key_ids.clamp(min=0)).max().item())


def _drop_own(sims: Tensor, positions: Tensor, k: int, query_ids: Tensor | None, key_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """Remove candidates that carry the query's own id and keep the best ``k``."""
    if query_ids is not None and key_ids is not None:
        own = key_ids.to(positions.device)[positions.clamp(min=0)] == query_ids.to(positions.device).view(-1, 1)
        sims = sims.masked_fill(own | (positions < 0), float("-inf"))
    sims, order = sims.topk(min(k, sims.size(1)), dim=1)
    positions = positions.gather(1, order)
    _check_found(sims, k)
    return sims, positions


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

    With ids, each backend first takes ``k`` plus the largest number of bank
    copies of one id, then drops the query's own entries.

    Shapes:
        queries (B, D), keys (Q, D), ids (B,) and (Q,) -> sims (B, k), positions (B, k).
    """
    _check_inputs(queries, keys, k)
    keys = keys.to(queries.dtype)
    wanted = min(k + (_max_copies(key_ids) if query_ids is not None else 0), keys.size(0))
    best_sims, best_positions = None, None
    for start in range(0, keys.size(0), chunk_size):
        sims = queries @ keys[start : start + chunk_size].T  # (B, chunk)
        positions = torch.arange(start, start + sims.size(1), device=sims.device).expand_as(sims)
        if best_sims is not None:
            sims = torch.cat([best_sims, sims], dim=1)
            positions = torch.cat([best_positions, positions], dim=1)
        best_sims, order = sims.topk(min(wanted, sims.size(1)), dim=1)
        best_positions = positions.gather(1, order)
    return _drop_own(best_sims, best_positions, k, query_ids, key_ids)


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

    Runs on CPU arrays; results come back on the queries' device.

    Shapes:
        queries (B, D), keys (Q, D) -> sims (B, k), positions (B, k).
    """
    import faiss

    _check_inputs(queries, keys, k)
    wanted = min(k + (_max_copies(key_ids) if query_ids is not None else 0), keys.size(0))
    query_array = np.ascontiguousarray(queries.detach().float().cpu().numpy())
    key_array = np.ascontiguousarray(keys.detach().float().cpu().numpy())
    sims, positions = faiss.knn(query_array, key_array, wanted, metric=faiss.METRIC_INNER_PRODUCT)
    sims = torch.from_numpy(sims).to(queries.device, queries.dtype)
    positions = torch.from_numpy(positions).to(queries.device)
    return _drop_own(sims, positions, k, query_ids, key_ids)


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
