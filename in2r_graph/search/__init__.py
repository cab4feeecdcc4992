"""k-nearest-neighbour search backends (torch exact, FAISS flat, auto)."""

from .knn import faiss_search, knn_search, list_backends, register_backend, torch_search

__all__ = ["faiss_search", "knn_search", "list_backends", "register_backend", "torch_search"]
