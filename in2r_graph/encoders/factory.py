"""Build image and text encoders from a kind name and keyword arguments."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from in2r_graph.encoders.image import GlobalImageEncoder, RegionImageEncoder, ThumbnailCNN
from in2r_graph.encoders.text import EmbeddingTextEncoder, GRUTextEncoder
from in2r_graph.encoders.transformers_text import TransformersTextEncoder

logger = logging.getLogger(__name__)

IMAGE_ENCODERS = ("global", "region", "thumbnail")
TEXT_ENCODERS = ("embedding", "gru", "transformers")


def _normalise_kind(kind: str, choices: tuple[str, ...], argument: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"{argument} must be a str, one of {choices}, got {type(kind).__name__}")
    name = kind.strip().lower()
    if name not in choices:
        raise ValueError(f"{argument} must be one of {choices}, got {kind!r}")
    return name


def _require(value: int | None, argument: str, kind: str) -> int:
    if value is None:
        raise ValueError(f"{argument} is required for encoder kind {kind!r}, got None")
    return value


def build_image_encoder(kind: str, embed_dim: int, *, input_dim: int | None = None, **kwargs: Any) -> nn.Module:
    """Build an image encoder.

    Args:
        kind: ``"global"`` (:class:`GlobalImageEncoder`, one feature vector per
            image), ``"region"`` (:class:`RegionImageEncoder`, a set of region
            features per image) or ``"thumbnail"`` (:class:`ThumbnailCNN`, raw
            RGB thumbnails). Case and surrounding spaces are ignored.
        embed_dim: Size of the joint embedding.
        input_dim: Size of the input features. Required for ``"global"`` and
            ``"region"``, ignored for ``"thumbnail"``.
        **kwargs: Passed to the encoder's constructor.

    Raises:
        ValueError: If ``kind`` is unknown or ``input_dim`` is missing.
    """
    name = _normalise_kind(kind, IMAGE_ENCODERS, "kind")
    if name == "thumbnail":
        encoder: nn.Module = ThumbnailCNN(embed_dim, **kwargs)
    elif name == "global":
        encoder = GlobalImageEncoder(_require(input_dim, "input_dim", name), embed_dim, **kwargs)
    else:
        encoder = RegionImageEncoder(_require(input_dim, "input_dim", name), embed_dim, **kwargs)
    logger.debug("Built image encoder %s with embed_dim=%d", type(encoder).__name__, embed_dim)
    return encoder


def build_text_encoder(
    kind: str,
    embed_dim: int,
    *,
    input_dim: int | None = None,
    vocab_size: int | None = None,
    model_dir: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a text encoder.

    Args:
        kind: ``"embedding"`` (:class:`EmbeddingTextEncoder`, one precomputed
            embedding per caption), ``"gru"`` (:class:`GRUTextEncoder`, token
            ids) or ``"transformers"`` (:class:`TransformersTextEncoder`, raw
            strings). Case and surrounding spaces are ignored.
        embed_dim: Size of the joint embedding.
        input_dim: Size of the caption embeddings. Required for
            ``"embedding"``, ignored otherwise.
        vocab_size: Number of word ids. Required for ``"gru"``, ignored
            otherwise.
        model_dir: Local folder of a transformers model and its tokenizer.
            Required for ``"transformers"``, ignored otherwise.
        **kwargs: Passed to the encoder's constructor.

    Raises:
        ValueError: If ``kind`` is unknown or its required size or folder is
            missing.
    """
    name = _normalise_kind(kind, TEXT_ENCODERS, "kind")
    if name == "embedding":
        encoder: nn.Module = EmbeddingTextEncoder(_require(input_dim, "input_dim", name), embed_dim, **kwargs)
    elif name == "transformers":
        if model_dir is None:
            raise ValueError(f"model_dir is required for encoder kind {name!r}, got None")
        encoder = TransformersTextEncoder(model_dir, embed_dim, **kwargs)
    else:
        encoder = GRUTextEncoder(_require(vocab_size, "vocab_size", name), embed_dim, **kwargs)
    logger.debug("Built text encoder %s with embed_dim=%d", type(encoder).__name__, embed_dim)
    return encoder
