"""Memory banks of trusted paired embeddings."""

from .bank import MemoryBank

__all__ = ["MemoryBank"]
