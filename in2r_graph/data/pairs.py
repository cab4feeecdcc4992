"""Batches of image and text inputs for training and evaluation.

A :class:`PairData` wraps one split and a caption-to-image mapping (the noisy
one for training, the clean one for evaluation). It hands out batches by
index. Ground-truth clean labels are not stored here: the training loop sees
only the (possibly noisy) mapping.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch import Tensor

from .precomp import PrecompSplit
from .vocab import Vocabulary, collate_tokens

logger = logging.getLogger(__name__)

# Feature arrays below this size are read into memory once; larger ones stay
# memory-mapped and each batch reads only its rows.
IN_MEMORY_BYTES = 2 * 1024**3


def subset_split(split: PrecompSplit, max_captions: int) -> PrecompSplit:
    """Keep the first images of a split and their captions, at most ``max_captions`` captions."""
    per_image = split.captions_per_image
    num_images = max(1, min(split.num_images, max_captions // per_image))
    num_captions = num_images * per_image
    embeddings = split.caption_embeddings
    return dataclasses.replace(
        split,
        images=split.images[:num_images],
        captions=split.captions[:num_captions],
        caption_embeddings=None if embeddings is None else embeddings[:num_captions],
        image_ids=None if split.image_ids is None else split.image_ids[:num_images],
    )


class PairData:
    """Index-addressable image and text inputs of one split.

    Args:
        split: the split to read.
        caption_to_image: image index of each caption (noisy for training).
        vocab: vocabulary for token inputs; ``None`` uses the split's
            caption embeddings.

    Shapes:
        caption_to_image: (N,); :meth:`images` returns (B, ...) float32 or
        uint8; :meth:`texts` returns (B, E) float32 or a token dict.
    """

    def __init__(self, split: PrecompSplit, caption_to_image: np.ndarray, vocab: Vocabulary | None = None) -> None:
        caption_to_image = np.asarray(caption_to_image, dtype=np.int64)
        if caption_to_image.shape != (split.num_captions,):
            raise ValueError(
                f"caption_to_image has shape {caption_to_image.shape}; expected ({split.num_captions},) for "
                f"split {split.split!r}"
            )
        self.split = split
        self.caption_to_image = caption_to_image
        self.vocab = vocab
        images = split.images
        self.image_array = np.asarray(images) if images.nbytes <= IN_MEMORY_BYTES else images
        if vocab is None:
            if split.caption_embeddings is None:
                raise ValueError(f"split {split.split!r} has no caption embeddings and no vocabulary was given")
            self.text_array = np.asarray(split.caption_embeddings, dtype=np.float32)
            self.tokens = None
        else:
            self.text_array = None
            self.tokens = [vocab.encode(caption) for caption in split.captions]

    @property
    def num_pairs(self) -> int:
        return int(self.caption_to_image.shape[0])

    @property
    def num_images(self) -> int:
        return int(self.image_array.shape[0])

    def image_inputs(self, image_indices: np.ndarray) -> Tensor:
        """Return the image inputs of the given image rows."""
        image_indices = np.asarray(image_indices, dtype=np.int64)
        rows = self.image_array[image_indices]
        tensor = torch.from_numpy(np.ascontiguousarray(rows))
        return tensor if tensor.dtype == torch.uint8 else tensor.float()

    def images(self, pair_indices: np.ndarray) -> Tensor:
        """Return the image inputs paired with the given captions."""
        return self.image_inputs(self.caption_to_image[np.asarray(pair_indices, dtype=np.int64)])

    def texts(self, pair_indices: np.ndarray) -> Tensor | dict[str, Tensor]:
        """Return the text inputs of the given captions."""
        pair_indices = np.asarray(pair_indices, dtype=np.int64)
        if self.tokens is None:
            return torch.from_numpy(self.text_array[pair_indices])
        return collate_tokens([self.tokens[i] for i in pair_indices])


def to_device(inputs: Tensor | dict[str, Tensor], device: torch.device) -> Tensor | dict[str, Tensor]:
    """Move a tensor or a dict of tensors to ``device``."""
    if isinstance(inputs, dict):
        return {key: value.to(device, non_blocking=True) for key, value in inputs.items()}
    return inputs.to(device, non_blocking=True)
