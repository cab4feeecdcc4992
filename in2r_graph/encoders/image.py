"""Image encoders: global feature MLP, region features with GPO, thumbnail CNN.

Every encoder returns L2-normalised embeddings of shape (B, embed_dim) in its
parameters' dtype (float32 by default) on the input's device. In training
mode each one applies its augmentation and dropout, so two forward passes of
one batch give two different views. In eval mode the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from in2r_graph.encoders.gpo import GPO
from in2r_graph.encoders.layers import (
    ResidualProjection,
    VectorEncoder,
    apply_to_valid,
    check_features,
    check_lengths,
    compact_kept,
    ensure_one_kept,
    lengths_to_mask,
    to_parameter_dtype,
)

# Per-channel RGB mean and standard deviation of ImageNet, the usual input
# normalisation for CNNs on natural images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DOWNSAMPLING = ("stride", "maxpool")


class GlobalImageEncoder(VectorEncoder):
    """Encoder of one global feature vector per image (for example CLIP or CNN
    pooled features).

    Applies feature dropout (training only), a linear projection with a
    two-layer MLP residual, and L2 normalisation.

    Args:
        input_dim: Size of the image features.
        embed_dim: Size of the joint embedding.
        hidden_dim: Hidden size of the MLP residual. Defaults to
            ``max(embed_dim // 2, 1)``.
        dropout: Probability of zeroing each input feature in training mode.
        norm: Normalisation inside the MLP, ``"layer"`` (default) or ``"batch"``.

    Shapes:
        - input: (B, input_dim), float16 or float32
        - output: (B, embed_dim), L2-normalised
    """


class RegionImageEncoder(nn.Module):
    """Encoder of a set of region features per image, pooled with GPO.

    Each region goes through a linear projection with a two-layer MLP
    residual. GPO pools the regions of an image, and the result is
    L2-normalised. In training mode each region is dropped with probability
    ``region_drop`` (at least one region of every image is kept) and input
    features are dropped out with probability ``dropout``.

    Args:
        input_dim: Size of each region feature.
        embed_dim: Size of the joint embedding.
        region_drop: Probability of dropping each region in training mode.
        dropout: Probability of zeroing each input feature in training mode.
        hidden_dim: Hidden size of the MLP residual. Defaults to
            ``max(embed_dim // 2, 1)``.
        norm: Normalisation inside the MLP, ``"layer"`` (default) or
            ``"batch"``. Padding regions never enter either one.
        gpo_dim: Size of the GPO rank encodings and of its GRU.

    Shapes:
        - features: (B, R, input_dim), float16 or float32
        - lengths: (B,), number of valid leading regions per image in [1, R];
          None means every image has R regions
        - output: (B, embed_dim), L2-normalised
    """

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        region_drop: float = 0.2,
        dropout: float = 0.1,
        *,
        hidden_dim: int | None = None,
        norm: str = "layer",
        gpo_dim: int = 32,
    ) -> None:
        super().__init__()
        if not 0.0 <= region_drop < 1.0:
            raise ValueError(f"region_drop must lie in [0, 1), got {region_drop}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.input_dim = input_dim
        self.embed_dim = embed_dim
        self.region_drop = region_drop
        self.dropout = nn.Dropout(dropout)
        self.head = ResidualProjection(input_dim, embed_dim, hidden_dim, norm=norm)
        self.pool = GPO(encoding_dim=gpo_dim, hidden_dim=gpo_dim)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        check_features(features, "features", ndim=3, last_dim=self.input_dim)
        batch_size, num_regions, _ = features.shape
        x = to_parameter_dtype(features, self)

        mask = None
        if lengths is not None:
            lengths = check_lengths(lengths, batch_size, num_regions).to(features.device)
            mask = lengths_to_mask(lengths, num_regions)  # (B, R)
        if self.training and self.region_drop > 0:
            valid = mask if mask is not None else torch.ones_like(x[..., 0], dtype=torch.bool)
            keep = valid & (torch.rand(valid.shape, device=x.device) >= self.region_drop)
            keep = ensure_one_kept(keep, valid)
            x, lengths = compact_kept(x, keep)  # (B, R', input_dim)
            mask = lengths_to_mask(lengths, x.shape[1])
        if lengths is None:
            lengths = torch.full((batch_size,), num_regions, dtype=torch.long, device=x.device)

        x = self.dropout(x)
        regions = apply_to_valid(self.head, x, mask)  # (B, R', embed_dim)
        pooled = self.pool(regions, lengths)  # (B, embed_dim)
        return F.normalize(pooled, dim=-1)


def augment_thumbnails(images: Tensor, max_shift: int, flip: bool = True) -> Tensor:
    """Randomly flip and shift each image of a channels-last batch.

    Each image is mirrored left-right with probability 0.5 (when ``flip``) and
    shifted by a random whole number of pixels in [-max_shift, max_shift] along
    each axis. Pixels shifted in from outside repeat the border, so the output
    has the input's size. One gather performs both steps for the whole batch.

    Shapes:
        - images: (B, H, W, C), any dtype
        - output: (B, H, W, C), same dtype
    """
    batch_size, height, width, _ = images.shape
    device = images.device
    shift_y = torch.randint(-max_shift, max_shift + 1, (batch_size, 1), device=device)
    shift_x = torch.randint(-max_shift, max_shift + 1, (batch_size, 1), device=device)
    rows = (torch.arange(height, device=device) + shift_y).clamp_(0, height - 1)  # (B, H)
    cols = torch.arange(width, device=device).expand(batch_size, -1)  # (B, W)
    if flip:
        mirrored = torch.rand(batch_size, 1, device=device) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    cols = (cols + shift_x).clamp(0, width - 1)
    batch_index = torch.arange(batch_size, device=device).view(-1, 1, 1)
    return images[batch_index, rows.unsqueeze(2), cols.unsqueeze(1)]  # (B, H, W, C)


class ThumbnailCNN(nn.Module):
    """Small CNN trained from scratch on RGB thumbnails stored channels-last.

    The input is scaled to [0, 1] and normalised with ImageNet statistics.
    One conv-BN-ReLU block per entry of ``channels`` follows, and each block
    halves the resolution. Global average pooling, dropout and a linear layer
    give the embedding, which is L2-normalised. In training mode every image is
    randomly mirrored and shifted by up to ``shift_fraction`` of its size.

    With ``downsample="stride"`` (default) each block's 3x3 convolution has
    stride 2. With ``"maxpool"`` each block is a stride-1 convolution followed
    by 2x2 max pooling, which computes every convolution at four times the
    output resolution and is about three times slower.

    Args:
        embed_dim: Size of the joint embedding.
        channels: Output channels of the conv blocks.
        dropout: Dropout probability before the final linear layer.
        downsample: ``"stride"`` or ``"maxpool"``.
        shift_fraction: Largest random shift in training mode, as a fraction of
            the image height and width (rounded down to whole pixels).
        flip: Whether training mode mirrors images at random.

    Shapes:
        - images: (B, H, W, 3), uint8 in [0, 255] or floating in [0, 1]
        - output: (B, embed_dim), L2-normalised
    """

    def __init__(
        self,
        embed_dim: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        dropout: float = 0.1,
        *,
        downsample: str = "stride",
        shift_fraction: float = 0.125,
        flip: bool = True,
    ) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive integer, got {embed_dim}")
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty sequence of positive integers, got {channels}")
        if downsample not in DOWNSAMPLING:
            raise ValueError(f"downsample must be one of {DOWNSAMPLING}, got {downsample!r}")
        if not 0.0 <= shift_fraction < 0.5:
            raise ValueError(f"shift_fraction must lie in [0, 0.5), got {shift_fraction}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.shift_fraction = shift_fraction
        self.flip = flip
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        blocks = []
        in_channels = 3
        for out_channels in channels:
            stride = 2 if downsample == "stride" else 1
            block = [
                nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            if downsample == "maxpool":
                block.append(nn.MaxPool2d(2, ceil_mode=True))
            blocks.append(nn.Sequential(*block))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, embed_dim)
        # The input arrives channels-last, and oneDNN convolutions on CPU run
        # faster when the weights use the same memory format.
        self.blocks.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[-1] != 3:
            found = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor of shape (B, H, W, 3), got {found}")
        if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
            raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")

        if self.training:
            max_shift = int(self.shift_fraction * min(images.shape[1], images.shape[2]))
            images = augment_thumbnails(images, max_shift, flip=self.flip)

        dtype = self.fc.weight.dtype
        # permute gives an NCHW view with channels-last strides, no copy.
        x = images.permute(0, 3, 1, 2).to(dtype=dtype)  # (B, 3, H, W)
        if images.dtype == torch.uint8:
            x = x / 255.0
        x = (x - self.mean.to(dtype)) / self.std.to(dtype)

        x = self.blocks(x)  # (B, C, H', W')
        x = x.mean(dim=(2, 3))  # (B, C)
        x = self.fc(self.dropout(x))  # (B, embed_dim)
        return F.normalize(x, dim=-1)
