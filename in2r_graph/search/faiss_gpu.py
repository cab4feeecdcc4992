"""Exact search with FAISS's GPU kernel, registered only when faiss has GPU support.

NOTE: written against the faiss-gpu API (``faiss.knn_gpu`` with
``faiss.contrib.torch_utils``) but never run here: the machines this project
is built on have faiss-cpu and no GPU.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from .knn import candidates_needed, check_inputs, drop_own, register_backend

logger = logging.getLogger(__name__)


def faiss_gpu_available() -> bool:
    """Return whether the installed faiss can search on a GPU."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "knn_gpu") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


_RESOURCES: dict[int, object] = {}


def _resources(device: torch.device):
    import faiss

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _RESOURCES:
        _RESOURCES[index] = faiss.StandardGpuResources()
    return _RESOURCES[index]


@torch.no_grad()
def faiss_gpu_search(
    queries: Tensor,
    keys: Tensor,
    k: int,
    *,
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact inner-product search of CUDA tensors with ``faiss.knn_gpu``; results stay on the GPU.

    Shapes:
        queries (B, D), keys (Q, D) on one CUDA device -> sims (B, k), positions (B, k).
    """
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take torch tensors)

    check_inputs(queries, keys, k)
    if queries.device.type != "cuda":
        raise ValueError(f"backend 'faiss-gpu' needs CUDA tensors; got queries on {queries.device}")
    wanted = candidates_needed(k, keys.size(0), query_ids, key_ids)
    sims, positions = faiss.knn_gpu(
        _resources(queries.device),
        queries.float().contiguous(),
        keys.float().contiguous(),
        wanted,
        metric=faiss.METRIC_INNER_PRODUCT,
    )
    return drop_own(sims.to(queries.dtype), positions.long(), k, query_ids, key_ids)


if faiss_gpu_available():
    register_backend("faiss-gpu")(faiss_gpu_search)
