"""Image-text retrieval metrics: Recall@K, rSum, median and mean rank.

Similarities are inner products of the given embeddings, so callers pass
L2-normalised embeddings when they want cosine similarity. An ensemble of
networks is scored by the mean of the per-network similarity matrices.

The similarity matrix is built in shards of image rows, so peak memory grows
with ``shard_size * num_captions`` and not with ``num_images * num_captions``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

RECALL_KS: tuple[int, ...] = (1, 5, 10)
"""Cut-offs K of the reported Recall@K values."""

NUM_FOLDS = 5
"""Number of folds of the COCO-style 1K evaluation."""

METRIC_KEYS: tuple[str, ...] = (
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "rsum",
    "i2t_medr",
    "i2t_meanr",
    "t2i_medr",
    "t2i_meanr",
)
"""Keys of the dictionaries returned by :func:`retrieval_metrics`, in order."""


def retrieval_metrics(
    image_embeddings: Tensor | Sequence[Tensor],
    text_embeddings: Tensor | Sequence[Tensor],
    caption_to_image: Tensor | np.ndarray | Sequence[int],
    *,
    shard_size: int = 1024,
) -> dict[str, float]:
    """Compute Recall@1/5/10, rSum and median/mean rank in both directions.

    The similarity of image ``i`` and caption ``j`` is
    ``image_embeddings[i] @ text_embeddings[j]``. For an ensemble (sequences
    of one tensor per network) it is the mean over networks of the
    per-network similarities, which differs from the similarity of averaged
    embeddings.

    Ranks are 1-based. The rank of an item is 1 plus the number of
    candidates with a strictly higher similarity, so a tie with the ground
    truth does not push the ground truth down.

    - Image to text: an image query is ranked by its best-ranked
      ground-truth caption, so it counts as correct at K when any of its
      captions is within the top K.
    - Text to image: a caption query is ranked by its ground-truth image.

    Recalls are percentages in [0, 100] and ``rsum`` is the sum of the six
    unrounded recalls. The median rank is rounded down when the number of
    queries is even and the two middle ranks differ.

    The whole computation is vectorised over queries. The similarity matrix
    is computed ``shard_size`` image rows at a time, so peak memory grows
    with ``shard_size * N`` and not with ``M * N``. The computation runs on
    the device of the embeddings. Floating dtypes narrower than 32 bits are
    upcast to float32 because half-precision similarities create spurious
    ties.

    .. note::
        For text to image, the similarity of each caption to its own image is
        computed by a row-wise dot product, outside the sharded matrix
        product. A competing image whose similarity equals it only up to
        floating-point rounding can therefore count as strictly higher. The
        caption's own image is always excluded from that count.

    Args:
        image_embeddings: Image embeddings, or one tensor per network of an
            ensemble.
        text_embeddings: Caption embeddings, with the same number of networks
            as ``image_embeddings``.
        caption_to_image: Ground-truth image index of each caption. An image
            may own any number of captions, but at least one.
        shard_size: Number of image rows of the similarity matrix computed at
            once.

    Returns:
        A dictionary with the keys of :data:`METRIC_KEYS`.

    Raises:
        TypeError: If an argument has the wrong type or a non-floating or
            non-integer dtype.
        ValueError: If shapes disagree, devices differ, an embedding is not
            finite, an image index is out of range, an image owns no caption,
            or ``shard_size`` is not positive.

    Shapes:
        - image_embeddings: ``(M, D)`` per network (``D`` may differ between
          networks)
        - text_embeddings: ``(N, D)`` per network
        - caption_to_image: ``(N,)``
    """
    _check_positive_int(shard_size, "shard_size")
    images, texts = _prepare_embeddings(image_embeddings, text_embeddings)
    num_images = images[0].shape[0]
    num_captions = texts[0].shape[0]
    owner = _prepare_caption_to_image(
        caption_to_image, num_images, num_captions, images[0].device
    )

    logger.debug(
        "Scoring %d images against %d captions with %d network(s), shard size %d",
        num_images,
        num_captions,
        len(images),
        shard_size,
    )
    i2t_ranks, t2i_ranks = _compute_ranks(images, texts, owner, shard_size)
    return _summarise_ranks(i2t_ranks, t2i_ranks)


def five_fold_metrics(
    image_embeddings: Tensor | Sequence[Tensor],
    text_embeddings: Tensor | Sequence[Tensor],
    caption_to_image: Tensor | np.ndarray | Sequence[int],
    *,
    fold_size: int = 1000,
    shard_size: int = 1024,
) -> dict[str, float]:
    """Average the retrieval metrics over five consecutive folds of images.

    This is the MS-COCO "1K" protocol: fold ``f`` contains images
    ``f * fold_size`` to ``(f + 1) * fold_size - 1`` and the captions of those
    images, wherever they sit in ``text_embeddings``. Each fold is scored by
    :func:`retrieval_metrics` on its own, and every metric, ``rsum`` and the
    ranks included, is the mean of the five per-fold values.

    Args:
        image_embeddings: Image embeddings, or one tensor per network of an
            ensemble. Exactly ``5 * fold_size`` images are required.
        text_embeddings: Caption embeddings, with the same number of networks
            as ``image_embeddings``.
        caption_to_image: Ground-truth image index of each caption.
        fold_size: Number of images per fold.
        shard_size: Number of image rows of the similarity matrix computed at
            once.

    Returns:
        A dictionary with the keys of :data:`METRIC_KEYS`.

    Raises:
        TypeError: As in :func:`retrieval_metrics`.
        ValueError: If the number of images is not ``5 * fold_size``, if
            ``fold_size`` is not positive, or for any reason listed in
            :func:`retrieval_metrics`.

    Shapes:
        - image_embeddings: ``(5 * fold_size, D)`` per network
        - text_embeddings: ``(N, D)`` per network
        - caption_to_image: ``(N,)``
    """
    _check_positive_int(fold_size, "fold_size")
    _check_positive_int(shard_size, "shard_size")
    images, texts = _prepare_embeddings(image_embeddings, text_embeddings)
    num_images = images[0].shape[0]
    required = NUM_FOLDS * fold_size
    if num_images != required:
        raise ValueError(
            f"five_fold_metrics requires exactly {NUM_FOLDS} * fold_size = {required} "
            f"images (fold_size={fold_size}), got {num_images} images; set fold_size "
            f"to a fifth of the image count, or score all images at once with "
            f"retrieval_metrics"
        )
    owner = _prepare_caption_to_image(
        caption_to_image, num_images, texts[0].shape[0], images[0].device
    )

    totals = dict.fromkeys(METRIC_KEYS, 0.0)
    for fold in range(NUM_FOLDS):
        start = fold * fold_size
        stop = start + fold_size
        caption_index = torch.nonzero((owner >= start) & (owner < stop)).squeeze(1)  # (N_fold,)
        fold_metrics = retrieval_metrics(
            [image[start:stop] for image in images],
            [text[caption_index] for text in texts],
            owner[caption_index] - start,
            shard_size=shard_size,
        )
        logger.debug("Fold %d of %d: rsum %.2f", fold + 1, NUM_FOLDS, fold_metrics["rsum"])
        for key in METRIC_KEYS:
            totals[key] += fold_metrics[key]

    return {key: total / NUM_FOLDS for key, total in totals.items()}


def format_metrics_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """Format retrieval metrics as a plain-text table, one row per name.

    The columns are Recall@1/5/10 image to text, Recall@1/5/10 text to image
    and rSum, each with one decimal. Ranks are not shown.

    Args:
        rows: Metric dictionaries as returned by :func:`retrieval_metrics`,
            keyed by the row name (a model, a network or a split).

    Returns:
        The table, with a header line, one line per row and no trailing
        newline. With no rows, only the header is returned.

    Raises:
        TypeError: If a row is not a mapping.
        ValueError: If a row lacks one of the recall keys or ``rsum``.
    """
    columns = [(f"{direction} R@{k}", f"{direction}_r{k}") for direction in ("i2t", "t2i") for k in RECALL_KS]
    columns.append(("rSum", "rsum"))

    name_width = max([len("name"), *(len(str(name)) for name in rows)])
    header = "name".ljust(name_width) + "".join(
        f"  {title:>{_column_width(title)}}" for title, _ in columns
    )
    lines = [header]
    for name, metrics in rows.items():
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"rows[{name!r}] must be a mapping of metric names to values, "
                f"got {type(metrics).__name__}"
            )
        cells = []
        for title, key in columns:
            if key not in metrics:
                raise ValueError(
                    f"rows[{name!r}] is missing the metric {key!r}; expected the keys "
                    f"returned by retrieval_metrics: {', '.join(METRIC_KEYS)}"
                )
            cells.append(f"  {float(metrics[key]):>{_column_width(title)}.1f}")
        lines.append(str(name).ljust(name_width) + "".join(cells))
    return "\n".join(lines)


def _column_width(title: str) -> int:
    # Wide enough for the title and for "100.0" (or "600.0" in the rSum column).
    return max(len(title), 5)


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def _as_network_list(embeddings: object, name: str) -> list[Tensor]:
    """Wrap a single tensor in a list and check that a sequence contains only tensors."""
    if isinstance(embeddings, Tensor):
        return [embeddings]
    if isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Sequence):
        raise TypeError(
            f"{name} must be a Tensor or a sequence of Tensors (one per network), "
            f"got {type(embeddings).__name__}"
        )
    networks = list(embeddings)
    if not networks:
        raise ValueError(f"{name} is an empty sequence; expected at least one Tensor")
    for index, tensor in enumerate(networks):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name}[{index}] must be a Tensor, got {type(tensor).__name__}")
    return networks


def _prepare_embeddings(
    image_embeddings: object, text_embeddings: object
) -> tuple[list[Tensor], list[Tensor]]:
    """Validate the embeddings and cast them to one common floating dtype."""
    images = _as_network_list(image_embeddings, "image_embeddings")
    texts = _as_network_list(text_embeddings, "text_embeddings")
    if len(images) != len(texts):
        raise ValueError(
            f"image_embeddings has {len(images)} network(s) but text_embeddings has "
            f"{len(texts)}; expected one text tensor per image tensor"
        )

    device = images[0].device
    dtype = images[0].dtype
    for network, (image, text) in enumerate(zip(images, texts)):
        for name, tensor in (("image_embeddings", image), ("text_embeddings", text)):
            label = f"{name}[{network}]" if len(images) > 1 else name
            if tensor.dim() != 2:
                raise ValueError(f"{label} must be 2-D (rows, dim), got shape {tuple(tensor.shape)}")
            if not tensor.is_floating_point():
                raise TypeError(f"{label} must have a floating dtype, got {tensor.dtype}")
            if tensor.device != device:
                raise ValueError(
                    f"{label} is on {tensor.device} but image_embeddings is on {device}; "
                    f"expected all embeddings on one device"
                )
            if tensor.shape[0] == 0 or tensor.shape[1] == 0:
                raise ValueError(f"{label} is empty (shape {tuple(tensor.shape)}); expected rows and dim >= 1")
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{label} contains NaN or infinite values")
            dtype = torch.promote_types(dtype, tensor.dtype)

        if image.shape[1] != text.shape[1]:
            raise ValueError(
                f"network {network}: image embeddings have dim {image.shape[1]} but text "
                f"embeddings have dim {text.shape[1]}; expected equal dims"
            )
        if image.shape[0] != images[0].shape[0]:
            raise ValueError(
                f"image_embeddings[{network}] has {image.shape[0]} rows but "
                f"image_embeddings[0] has {images[0].shape[0]}; expected equal counts"
            )
        if text.shape[0] != texts[0].shape[0]:
            raise ValueError(
                f"text_embeddings[{network}] has {text.shape[0]} rows but "
                f"text_embeddings[0] has {texts[0].shape[0]}; expected equal counts"
            )

    if torch.finfo(dtype).bits < 32:
        dtype = torch.float32
    return [image.to(dtype) for image in images], [text.to(dtype) for text in texts]


def _prepare_caption_to_image(
    caption_to_image: object, num_images: int, num_captions: int, device: torch.device
) -> Tensor:
    """Validate the caption-to-image mapping and return it as int64 on ``device``."""
    if isinstance(caption_to_image, Tensor):
        owner = caption_to_image
    elif isinstance(caption_to_image, (np.ndarray, Sequence)) and not isinstance(
        caption_to_image, (str, bytes)
    ):
        array = np.asarray(caption_to_image)
        if array.dtype == object:
            raise TypeError("caption_to_image must contain integers, got objects")
        owner = torch.from_numpy(array)
    else:
        raise TypeError(
            f"caption_to_image must be a Tensor, a numpy array or a sequence of ints, "
            f"got {type(caption_to_image).__name__}"
        )

    if owner.dtype == torch.bool or owner.is_floating_point() or owner.is_complex():
        raise TypeError(f"caption_to_image must have an integer dtype, got {owner.dtype}")
    if owner.dim() != 1 or owner.shape[0] != num_captions:
        raise ValueError(
            f"caption_to_image must have shape ({num_captions},), one image index per "
            f"caption, got shape {tuple(owner.shape)}"
        )
    owner = owner.to(device=device, dtype=torch.long)

    low = int(owner.min())
    high = int(owner.max())
    if low < 0 or high >= num_images:
        raise ValueError(
            f"caption_to_image contains image indices from {low} to {high}; expected "
            f"indices in [0, {num_images - 1}] for {num_images} images"
        )
    captions_per_image = torch.bincount(owner, minlength=num_images)  # (M,)
    without_caption = torch.nonzero(captions_per_image == 0).squeeze(1)
    if without_caption.numel() > 0:
        first_indices = without_caption[:10].tolist()
        raise ValueError(
            f"{without_caption.numel()} of {num_images} images own no caption in "
            f"caption_to_image (first: {first_indices}); every image needs at least one caption"
        )
    return owner


def _shard_similarity(images: list[Tensor], texts: list[Tensor], start: int, stop: int) -> Tensor:
    """Return the mean over networks of ``images[start:stop] @ texts.T``, shape (S, N)."""
    similarity = images[0][start:stop] @ texts[0].T  # (S, N)
    for image, text in zip(images[1:], texts[1:]):
        similarity.addmm_(image[start:stop], text.T)
    if len(images) > 1:
        similarity /= len(images)
    return similarity


def _ground_truth_similarity(images: list[Tensor], texts: list[Tensor], owner: Tensor) -> Tensor:
    """Return the mean over networks of each caption's similarity to its own image, shape (N,)."""
    similarity = (images[0][owner] * texts[0]).sum(dim=1)  # (N,)
    for image, text in zip(images[1:], texts[1:]):
        similarity += (image[owner] * text).sum(dim=1)
    if len(images) > 1:
        similarity /= len(images)
    return similarity


def _compute_ranks(
    images: list[Tensor], texts: list[Tensor], owner: Tensor, shard_size: int
) -> tuple[Tensor, Tensor]:
    """Return the 1-based image-to-text ranks (M,) and text-to-image ranks (N,)."""
    num_images = images[0].shape[0]
    num_captions = texts[0].shape[0]
    device = owner.device
    dtype = images[0].dtype

    caption_index = torch.arange(num_captions, device=device)  # (N,)
    own_image_similarity = _ground_truth_similarity(images, texts, owner)  # (N,)
    i2t_ranks = torch.empty(num_images, dtype=torch.long, device=device)
    t2i_higher = torch.zeros(num_captions, dtype=torch.long, device=device)

    for start in range(0, num_images, shard_size):
        stop = min(start + shard_size, num_images)
        similarity = _shard_similarity(images, texts, start, stop)  # (S, N)

        # Ground-truth entries of this shard: (row, caption) for every caption whose image is in it.
        in_shard = (owner >= start) & (owner < stop)
        gt_columns = caption_index[in_shard]  # (G,)
        gt_rows = owner[in_shard] - start  # (G,)

        # Image to text: each image is ranked by its best ground-truth caption.
        best_gt = torch.full((stop - start,), -math.inf, dtype=dtype, device=device)
        best_gt.scatter_reduce_(0, gt_rows, similarity[gt_rows, gt_columns], reduce="amax")  # (S,)
        # int32 counts: summing the boolean matrix as int64 would allocate twice the float shard.
        i2t_ranks[start:stop] = 1 + (similarity > best_gt.unsqueeze(1)).sum(dim=1, dtype=torch.int32)

        # Text to image: count the images of this shard above each caption's own image.
        # The own image is masked so that rounding differences never count it against itself.
        similarity[gt_rows, gt_columns] = -math.inf
        t2i_higher += (similarity > own_image_similarity.unsqueeze(0)).sum(dim=0, dtype=torch.int32)
        del similarity  # release this shard before the next one is allocated

    return i2t_ranks, 1 + t2i_higher


def _median_rank(ranks: Tensor) -> float:
    # numpy's median averages the two middle values; rounding down keeps the rank an integer.
    return float(np.floor(np.median(ranks.cpu().numpy())))


def _summarise_ranks(i2t_ranks: Tensor, t2i_ranks: Tensor) -> dict[str, float]:
    """Turn 1-based ranks into the metric dictionary of :data:`METRIC_KEYS`."""
    metrics: dict[str, float] = {}
    for direction, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        for k in RECALL_KS:
            metrics[f"{direction}_r{k}"] = 100.0 * (ranks <= k).double().mean().item()
    metrics["rsum"] = sum(metrics[f"{direction}_r{k}"] for direction in ("i2t", "t2i") for k in RECALL_KS)
    for direction, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        metrics[f"{direction}_medr"] = _median_rank(ranks)
        metrics[f"{direction}_meanr"] = ranks.double().mean().item()
    return metrics
