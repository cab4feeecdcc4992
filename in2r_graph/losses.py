"""Named loss terms of IN2R.

Each function returns a scalar tensor (or one value per sample where named so);
the trainer collects them in a ``{"name_loss": value}`` dict, sums the values
and logs each by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(queries: Tensor, targets: Tensor, temperature: float = 0.05, complementary_weight: float = 0.0) -> Tensor:
    """Symmetric InfoNCE with row ``i`` of ``queries`` matched to row ``i`` of ``targets``.

    With ``complementary_weight > 0`` a complementary term is added: for every
    non-matching entry it penalises ``-log(1 - p)``, the probability ``p`` that
    the softmax gives it, which pushes those probabilities towards 0.

    Shapes:
        queries, targets: (B, D), L2-normalised -> scalar.
    """
    if queries.shape != targets.shape:
        raise ValueError(f"info_nce expects two (B, D) tensors of one shape; got {tuple(queries.shape)} and {tuple(targets.shape)}")
    logits = queries @ targets.T / temperature  # (B, B)
    labels = torch.arange(logits.size(0), device=logits.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    if complementary_weight > 0 and logits.size(0) > 1:
        off_diagonal = ~torch.eye(logits.size(0), dtype=torch.bool, device=logits.device)
        complementary = 0.0
        for direction in (logits, logits.T):
            probabilities = direction.softmax(dim=1)[off_diagonal]
            complementary = complementary - torch.log1p(-probabilities.clamp(max=1 - 1e-6)).mean()
        loss = loss + complementary_weight * complementary / 2
    return loss


def hinge_hardest(queries: Tensor, targets: Tensor, margin: float = 0.2) -> Tensor:
    """Triplet hinge with the hardest in-batch negative in both directions (VSE++).

    Shapes:
        queries, targets: (B, D) -> scalar (mean over the batch).
    """
    sims = queries @ targets.T  # (B, B)
    positives = sims.diag()
    eye = torch.eye(sims.size(0), dtype=torch.bool, device=sims.device)
    negatives = sims.masked_fill(eye, float("-inf"))
    cost_targets = (margin + negatives.max(dim=1).values - positives).clamp(min=0)
    cost_queries = (margin + negatives.max(dim=0).values - positives).clamp(min=0)
    return (cost_targets + cost_queries).mean()


@torch.no_grad()
def per_sample_hinge(images: Tensor, texts: Tensor, margin: float = 0.2) -> Tensor:
    """Mean hinge cost of each pair against the other items of its batch, both directions.

    This is the per-sample loss the clean/noisy split is fitted on: a wrong
    pair scores low against its own partner, so its hinge cost is high.

    Shapes:
        images, texts: (B, D) -> (B,).
    """
    sims = images @ texts.T  # (B, B)
    positives = sims.diag()
    batch = sims.size(0)
    if batch < 2:
        return torch.zeros(batch, device=sims.device)
    eye = torch.eye(batch, dtype=torch.bool, device=sims.device)
    cost_texts = (margin + sims - positives.view(-1, 1)).clamp(min=0).masked_fill(eye, 0)
    cost_images = (margin + sims - positives.view(1, -1)).clamp(min=0).masked_fill(eye, 0)
    return (cost_texts.sum(dim=1) + cost_images.sum(dim=0)) / (2 * (batch - 1))
