"""A ring buffer of detached paired embeddings (the IN2R memory bank)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MemoryBank(nn.Module):
    """First-in first-out store of ``(image, text, pair index)`` triples.

    All state lives in registered buffers, so the bank moves with ``.to()``
    and is saved and restored by ``state_dict`` like any module. Entries are
    detached: nothing pushed into the bank carries gradients.

    Args:
        capacity: maximum number of pairs kept; the oldest are overwritten.
        dim: embedding size of both modalities.
        dtype: storage dtype of the embeddings (float32 by default).

    Shapes:
        - ``images``, ``texts``: (capacity, dim); only the first :attr:`size`
          rows are valid until the bank has wrapped around once.
        - ``indices``: (capacity,), the training-pair index of each entry (-1
          when empty), used to keep a query's own pair out of its neighbours.
    """

    def __init__(self, capacity: int, dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError(f"capacity={capacity} is invalid; expected a positive number of pairs")
        if dim < 1:
            raise ValueError(f"dim={dim} is invalid; expected a positive embedding size")
        self.capacity = int(capacity)
        self.dim = int(dim)
        self.register_buffer("images", torch.zeros(capacity, dim, dtype=dtype))
        self.register_buffer("texts", torch.zeros(capacity, dim, dtype=dtype))
        self.register_buffer("indices", torch.full((capacity,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        """Number of valid entries (at most ``capacity``)."""
        return int(self.count.item())

    def __len__(self) -> int:
        return self.size

    @torch.no_grad()
    def push(self, images: Tensor, texts: Tensor, indices: Tensor) -> None:
        """Append pairs, overwriting the oldest entries once the bank is full.

        Shapes:
            images, texts: (B, dim); indices: (B,).
        """
        if images.shape != texts.shape or images.dim() != 2 or images.size(1) != self.dim:
            raise ValueError(
                f"push expects images and texts of shape (B, {self.dim}); got {tuple(images.shape)} "
                f"and {tuple(texts.shape)}"
            )
        if indices.shape != images.shape[:1]:
            raise ValueError(f"push expects indices of shape ({images.size(0)},); got {tuple(indices.shape)}")
        batch = images.size(0)
        if batch == 0:
            return
        if batch > self.capacity:
            # Only the newest `capacity` pairs would survive the wrap-around anyway.
            images, texts, indices = images[-self.capacity :], texts[-self.capacity :], indices[-self.capacity :]
            batch = self.capacity
        slots = (self.pointer + torch.arange(batch, device=self.pointer.device)) % self.capacity
        self.images[slots] = images.detach().to(self.images.dtype)
        self.texts[slots] = texts.detach().to(self.texts.dtype)
        self.indices[slots] = indices.to(self.indices.device, torch.long)
        self.pointer.fill_((int(self.pointer) + batch) % self.capacity)
        self.count.fill_(min(self.capacity, int(self.count) + batch))

    def valid(self) -> tuple[Tensor, Tensor, Tensor]:
        """Return views of the valid ``(images, texts, indices)`` entries."""
        size = self.size
        return self.images[:size], self.texts[:size], self.indices[:size]

    @torch.no_grad()
    def clear(self) -> None:
        """Drop every entry."""
        self.indices.fill_(-1)
        self.pointer.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return f"capacity={self.capacity}, dim={self.dim}, size={self.size}"
