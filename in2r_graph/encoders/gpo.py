"""Generalised pooling operator (GPO) over a variable-size set of vectors.

GPO sorts every feature dimension of a set in descending order and takes a
weighted sum over the ranks. The rank weights are learnt. A small
bidirectional GRU reads sinusoidal encodings of the ranks 1..n of a set of
size n and gives each rank a score. A softmax with a low temperature over the
valid ranks turns the scores into weights. Uniform weights give mean pooling
and a one-hot weight on rank 1 gives max pooling, so GPO can learn anything
between the two, and a different mix for each set size.

Reference: Chen et al., "Learning the Best Pooling Strategy for Visual Semantic
Embedding", CVPR 2021, arXiv:2011.04305 (VSE-infinity).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from in2r_graph.encoders.layers import check_lengths, lengths_to_mask


def sinusoidal_encoding(num_positions: int, dim: int, *, device=None, dtype=None) -> Tensor:
    """Build sinusoidal encodings of the positions 1..num_positions.

    Even columns hold ``sin(p / 10000^(2i/dim))`` and odd columns the matching
    cosine, as in the Transformer.

    Shapes:
        - output: (num_positions, dim)
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even integer >= 2, got {dim}")
    positions = torch.arange(1, num_positions + 1, device=device, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    angles = positions * frequencies  # (num_positions, dim / 2)
    encoding = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # (num_positions, dim)
    return encoding.to(dtype=dtype or torch.float32)


def weighted_rank_pool(features: Tensor, lengths: Tensor, weights: Tensor) -> Tensor:
    """Sort each feature dimension over the valid entries and sum with rank weights.

    Padding entries are set to -inf before the descending sort, so they land
    after every valid value, and are zeroed afterwards. ``weights[b, r]`` is the
    weight of rank ``r`` (0 = largest value) of set ``b``. Weights of padding
    ranks are ignored.

    Args:
        features: Padded sets of vectors.
        lengths: Number of valid entries per set, in [1, K].
        weights: Weight per rank.

    Returns:
        One pooled vector per set, in the dtype of ``features``.

    Shapes:
        - features: (B, K, D)
        - lengths: (B,)
        - weights: (B, K)
        - output: (B, D)
    """
    batch_size, max_len, _ = features.shape
    lengths = check_lengths(lengths, batch_size, max_len)
    if weights.shape != (batch_size, max_len):
        raise ValueError(f"weights must have shape ({batch_size}, {max_len}), got {tuple(weights.shape)}")
    valid = lengths_to_mask(lengths, max_len).unsqueeze(-1)  # (B, K, 1)
    masked = features.masked_fill(~valid, float("-inf"))
    ranked = masked.sort(dim=1, descending=True).values  # (B, K, D)
    ranked = ranked.masked_fill(~valid, 0.0)
    weights = weights.to(dtype=features.dtype).masked_fill(~valid.squeeze(-1), 0.0)
    return (ranked * weights.unsqueeze(-1)).sum(dim=1)  # (B, D)


class GPO(nn.Module):
    """Generalised pooling operator with learnt per-rank weights.

    Args:
        encoding_dim: Size of the sinusoidal rank encodings (even).
        hidden_dim: Hidden size of each direction of the bidirectional GRU.
        temperature: Softmax temperature over the rank scores. Lower values
            make the weights peakier.

    Shapes:
        - features: (B, K, D), padded sets
        - lengths: (B,), number of valid entries per set in [1, K], or None
          when every set has K entries
        - output: (B, D), in the dtype of ``features``
    """

    def __init__(self, encoding_dim: int = 32, hidden_dim: int = 32, temperature: float = 0.1) -> None:
        super().__init__()
        if encoding_dim < 2 or encoding_dim % 2:
            raise ValueError(f"encoding_dim must be an even integer >= 2, got {encoding_dim}")
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be a positive integer, got {hidden_dim}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.encoding_dim = encoding_dim
        self.temperature = temperature
        self.gru = nn.GRU(encoding_dim, hidden_dim, batch_first=True, bidirectional=True)
        # No bias: the softmax ignores a shift shared by all ranks, so a bias
        # would never receive a gradient.
        self.scorer = nn.Linear(hidden_dim, 1, bias=False)

    def rank_weights(self, lengths: Tensor, max_len: int) -> Tensor:
        """Compute the softmax weight of every rank for sets of the given sizes.

        The weights depend only on the set size, so the GRU runs once per
        distinct size in the batch. Weights of ranks beyond a set's size are 0.

        Shapes:
            - lengths: (B,), values in [1, max_len]
            - output: (B, max_len), float32 rows summing to 1
        """
        lengths = check_lengths(lengths, lengths.shape[0], max_len)
        sizes, inverse = torch.unique(lengths, return_inverse=True)  # (U,), (B,)
        dtype = self.scorer.weight.dtype
        encoding = sinusoidal_encoding(max_len, self.encoding_dim, device=lengths.device, dtype=dtype)
        encoding = encoding.unsqueeze(0).expand(sizes.shape[0], -1, -1)  # (U, max_len, E)

        # Packing stops the backward direction from reading padding ranks, so a
        # set's weights do not depend on how far the batch is padded.
        packed = pack_padded_sequence(encoding, sizes.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=max_len)  # (U, max_len, 2H)
        states = states.view(*states.shape[:2], 2, -1).mean(dim=2)  # (U, max_len, H)

        scores = self.scorer(states).squeeze(-1)  # (U, max_len)
        scores = scores.masked_fill(~lengths_to_mask(sizes, max_len), float("-inf"))
        weights = torch.softmax(scores / self.temperature, dim=1)  # (U, max_len)
        return weights[inverse]  # (B, max_len)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        if features.dim() != 3:
            raise ValueError(f"features must have shape (B, K, D), got {tuple(features.shape)}")
        batch_size, max_len, _ = features.shape
        if batch_size == 0 or max_len == 0:
            raise ValueError(
                f"features must contain at least one set with one entry, got shape {tuple(features.shape)}"
            )
        if lengths is None:
            lengths = torch.full((batch_size,), max_len, dtype=torch.long, device=features.device)
        weights = self.rank_weights(lengths, max_len)  # (B, K)
        return weighted_rank_pool(features, lengths, weights)
