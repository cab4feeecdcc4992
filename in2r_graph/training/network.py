"""One co-trained network: two encoders, two refiners and a memory bank."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..config import Config
from ..encoders.factory import build_image_encoder, build_text_encoder
from ..memory import MemoryBank
from ..refiners import build_refiner
from . import distributed as dist_utils


class Network(nn.Module):
    """Everything one of the two co-trained networks owns.

    Keeping the refiners and the bank inside the module puts them in its
    ``state_dict`` (so checkpoints resume them) and in ``parameters()`` (so
    the optimiser and gradient clipping see the refiners).

    Attributes:
        image_encoder, text_encoder: map inputs to the joint space.
        text_refiner: builds caption prototypes for suspected-noisy images.
        image_refiner: builds image prototypes for suspected-noisy captions.
        bank: memory bank of trusted (image, caption) embedding pairs.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        text_refiner: nn.Module | None,
        image_refiner: nn.Module | None,
        bank: MemoryBank | None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.text_refiner = text_refiner
        self.image_refiner = image_refiner
        self.bank = bank

    def encode_images(self, images: Tensor) -> Tensor:
        return self.image_encoder(images)

    def encode_texts(self, texts) -> Tensor:
        return self.text_encoder(texts)


DEFAULT_MAX_BANK_SIZE = 65536


def resolve_bank_size(config: Config, num_pairs: int) -> int:
    """Return the bank capacity: the configured one, or the training-set size capped at 65,536.

    A bank larger than the training set only contains stale second copies of the
    same pairs. With ``rectify.bank_sharding`` each rank keeps its share of it.
    """
    size = config.rectify.bank_size if config.rectify.bank_size is not None else min(DEFAULT_MAX_BANK_SIZE, num_pairs)
    if config.rectify.bank_sharding:
        # Each rank keeps its share; the distributed top-k searches all shards.
        size = -(-size // dist_utils.world_size())
    return size


def resolve_encoder_kinds(config: Config, image_kind: str) -> tuple[str, str]:
    """Return the image and text encoder names, resolving ``auto`` from the data."""
    image = config.model.image_encoder
    if image == "auto":
        image = image_kind
    text = config.model.text_encoder
    if text == "auto":
        text = "embedding" if config.data.text_features else "gru"
    return image, text


def build_network(
    config: Config,
    *,
    image_kind: str,
    image_dim: int | None,
    text_dim: int | None,
    vocab_size: int | None,
    num_pairs: int,
    with_rectification: bool,
) -> Network:
    """Build one network from the configuration and the data's input sizes."""
    model, rectify = config.model, config.rectify
    image_name, text_name = resolve_encoder_kinds(config, image_kind)
    image_kwargs = {"dropout": model.dropout}
    if image_name in ("global", "region"):
        image_kwargs["input_dim"] = image_dim
        if image_name == "global":
            image_kwargs["hidden_dim"] = model.hidden_dim
    image_encoder = build_image_encoder(image_name, model.embed_dim, **image_kwargs)
    if text_name == "embedding":
        text_encoder = build_text_encoder(
            text_name, model.embed_dim, input_dim=text_dim, hidden_dim=model.hidden_dim, dropout=model.dropout
        )
    else:
        text_encoder = build_text_encoder(
            text_name, model.embed_dim, vocab_size=vocab_size, word_dim=model.word_dim, dropout=model.dropout
        )

    text_refiner = image_refiner = bank = None
    if with_rectification:
        text_refiner, image_refiner, bank = build_rectification(config, num_pairs)
    return Network(image_encoder, text_encoder, text_refiner, image_refiner, bank)


def refiner_options(config: Config) -> dict[str, Any]:
    """Return the keyword arguments of ``build_refiner`` that the configuration sets."""
    rectify = config.rectify
    return dict(
        num_layers=rectify.num_layers,
        heads=rectify.heads,
        dropout=rectify.refiner_dropout,
        readout=rectify.readout,
        use_edge_weight=rectify.edge_weights != "none",
    )


def build_rectification(config: Config, num_pairs: int) -> tuple[nn.Module, nn.Module, MemoryBank]:
    """Build one network's caption-prototype refiner, image-prototype refiner and memory bank."""
    options = refiner_options(config)
    text_refiner = build_refiner(config.rectify.refiner, config.model.embed_dim, **options)
    image_refiner = build_refiner(config.rectify.refiner, config.model.embed_dim, **options)
    return text_refiner, image_refiner, MemoryBank(resolve_bank_size(config, num_pairs), config.model.embed_dim)
