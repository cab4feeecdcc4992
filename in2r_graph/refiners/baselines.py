"""Parameter-free refiners: the ablations without graph reasoning."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch

from .base import ParameterFreeRefiner
from .registry import register_refiner


@register_refiner("mean")
class MeanRefiner(ParameterFreeRefiner):
    """Plain average of the neighbours' partner embeddings."""

    def forward(self, batch: Batch) -> Tensor:
        features, _ = self.neighbour_view(batch)  # (B, k, D)
        return F.normalize(features.mean(dim=1), dim=-1)


@register_refiner("weighted")
class WeightedMeanRefiner(ParameterFreeRefiner):
    """Average of the neighbours weighted by a softmax of their search similarity.

    Args:
        temperature: softmax temperature over the similarities (default 0.05).
    """

    def __init__(self, dim: int, temperature: float = 0.05, **kwargs) -> None:
        super().__init__(dim, **kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} is invalid; expected a positive number")
        self.temperature = temperature

    def forward(self, batch: Batch) -> Tensor:
        features, scores = self.neighbour_view(batch)  # (B, k, D), (B, k)
        weights = (scores / self.temperature).softmax(dim=1).unsqueeze(-1)  # (B, k, 1)
        return F.normalize((weights * features).sum(dim=1), dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, temperature={self.temperature}"


@register_refiner("nearest")
class NearestRefiner(ParameterFreeRefiner):
    """The single most similar neighbour's partner: the discrete substitute label."""

    def forward(self, batch: Batch) -> Tensor:
        features, scores = self.neighbour_view(batch)  # (B, k, D), (B, k)
        best = scores.argmax(dim=1)  # (B,)
        return F.normalize(features[range(features.size(0)), best], dim=-1)
