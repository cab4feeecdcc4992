"""k-nearest-neighbour search backends: torch exact, FAISS flat, FAISS IVF and auto."""

from . import faiss_gpu  # noqa: F401  (registers "faiss-gpu" when faiss has GPU support)
from .ivf import DEFAULT_NPROBE, FaissIVFIndex, clear_ivf_cache, default_nlist, ivf_search
from .knn import (
    AUTO_FAISS_MIN_KEYS,
    choose_exact_backend,
    faiss_search,
    knn_search,
    list_backends,
    register_backend,
    torch_search,
)

__all__ = [
    "AUTO_FAISS_MIN_KEYS",
    "DEFAULT_NPROBE",
    "FaissIVFIndex",
    "choose_exact_backend",
    "clear_ivf_cache",
    "default_nlist",
    "faiss_search",
    "ivf_search",
    "knn_search",
    "list_backends",
    "register_backend",
    "torch_search",
]
