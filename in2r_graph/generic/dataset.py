"""Paired datasets of any two modalities, and their adapter to the trainer.

A paired dataset is any indexable of ``(a, b)`` items, where item ``i`` pairs
``a_i`` with ``b_i`` and some pairs may be wrong. :class:`PairedDataset`
builds one from two row-aligned sequences and can carry clean flags for
diagnostics. :class:`PairedSplit` presents a paired dataset under the
interface the trainer reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

logger = logging.getLogger(__name__)

SIDES = ("a", "b")

Collate = Callable[[list[Any]], Any]


class PairedDataset(Sequence):
    """Row-aligned items of two sides: item ``i`` is ``(a[i], b[i])``.

    Args:
        a: Items of side a (tensors, arrays, strings or any object the side's
            collate function accepts). A tensor or array of shape (N, ...)
            is indexed directly, which is faster than collating N items.
        b: Items of side b, with the same length as ``a``.
        clean: Optional ground truth: ``clean[i]`` is true when pair ``i`` is
            correct. Only the split diagnostics read it; training never does.

    Raises:
        ValueError: If the sides or ``clean`` differ in length, or the
            dataset is empty.
    """

    def __init__(self, a: Sequence[Any] | Tensor | np.ndarray, b: Sequence[Any] | Tensor | np.ndarray, clean: Any = None) -> None:
        if len(a) != len(b):
            raise ValueError(f"a has {len(a)} items but b has {len(b)}; expected row-aligned sides of equal length")
        if len(a) == 0:
            raise ValueError("a and b are empty; expected at least one pair")
        self.a = a
        self.b = b
        self.clean = None if clean is None else clean_labels(clean, len(a))

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        return self.a[index], self.b[index]

    def side(self, name: str) -> Sequence[Any] | Tensor | np.ndarray:
        """Return the items of side ``"a"`` or ``"b"``."""
        if name not in SIDES:
            raise ValueError(f"side={name!r} is invalid; expected 'a' or 'b'")
        return self.a if name == "a" else self.b


class RowView(Sequence):
    """View of the rows ``rows`` of a paired dataset, renumbered from 0."""

    def __init__(self, dataset: Sequence[Any], rows: np.ndarray) -> None:
        self.dataset = dataset
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.rows[index])]


def clean_labels(clean: Any, length: int) -> np.ndarray:
    """Return ``clean`` as a boolean array of ``length`` flags, or raise ValueError."""
    labels = np.asarray(clean.cpu() if isinstance(clean, Tensor) else clean)
    if labels.shape != (length,):
        raise ValueError(f"clean has shape {labels.shape}; expected ({length},), one flag per pair")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("clean must contain booleans or 0/1 values, one per pair; got other values")
        labels = labels.astype(bool)
    return labels


def move_to_device(value: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor inside nested dicts, lists and tuples to ``device``; leave other values as they are."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, Mapping):
        return {key: move_to_device(item, device, non_blocking) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(move_to_device(item, device, non_blocking) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(move_to_device(item, device, non_blocking) for item in value)
    return value


class SideBatch:
    """A collated batch of one side, in any structure the side's encoder accepts.

    The trainer moves batches with ``batch.to(device)``. This wrapper adds
    that method to any collated structure (strings, nested dicts, lists of
    tensors), and :class:`SideEncoder` unwraps it before calling the user's
    encoder.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SideBatch:
        return SideBatch(move_to_device(self.value, torch.device(device), non_blocking))


@dataclass
class SplitName:
    """The name the trainer's error messages give a split."""

    split: str


class PairedSplit:
    """A paired dataset under the interface of the image-text ``PairData``.

    Item ``i`` is pair ``i`` on both sides, so each "image" has exactly one
    "caption" and ``caption_to_image`` is the identity. The pairs may still be
    wrong: the noise lives in the items themselves.

    NOTE: the trainer's internal names are image/text for historical reasons.
    Side a plays the image role (``images``, ``image_inputs``) and side b the
    text role (``texts``). Its metric and loss names (``i2t_r1``,
    ``image_rectify_loss``) follow the same mapping, and
    :func:`neutral_name` translates them back for the public results.

    Args:
        dataset: Any indexable of ``(a, b)`` items.
        collate_a: Turns a list of side-a items into a batch;
            ``torch.utils.data.default_collate`` when ``None``.
        collate_b: The same for side b.
        name: Split name used in messages (``train``, ``dev``, ``test``).
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        collate_a: Collate | None = None,
        collate_b: Collate | None = None,
        name: str = "train",
    ) -> None:
        self.dataset = dataset
        self.collates = {"a": collate_a, "b": collate_b}
        self.split = SplitName(name)
        self.caption_to_image = np.arange(len(dataset), dtype=np.int64)

    @property
    def num_pairs(self) -> int:
        return int(self.caption_to_image.size)

    @property
    def num_images(self) -> int:
        return self.num_pairs

    def gather(self, side: str, rows: np.ndarray | Sequence[int]) -> SideBatch:
        """Collate the items of ``side`` at ``rows`` into one batch."""
        rows = np.asarray(rows, dtype=np.int64)
        position = SIDES.index(side)
        collate = self.collates[side]
        dataset, offsets = _unwrap_rows(self.dataset)
        rows = offsets[rows] if offsets is not None else rows
        if collate is None and isinstance(dataset, PairedDataset):
            column = dataset.side(side)
            # Indexing a whole column equals collating its rows one by one, and is much faster.
            if isinstance(column, Tensor):
                return SideBatch(column[torch.from_numpy(rows)])
            if isinstance(column, np.ndarray):
                return SideBatch(torch.from_numpy(np.ascontiguousarray(column[rows])))
        items = [dataset[int(row)][position] for row in rows]
        return SideBatch((collate or default_collate)(items))

    def image_inputs(self, image_indices: np.ndarray) -> SideBatch:
        return self.gather("a", image_indices)

    def images(self, pair_indices: np.ndarray) -> SideBatch:
        return self.gather("a", pair_indices)

    def texts(self, pair_indices: np.ndarray) -> SideBatch:
        return self.gather("b", pair_indices)


def _unwrap_rows(dataset: Sequence[Any]) -> tuple[Sequence[Any], np.ndarray | None]:
    """Resolve nested row views to the underlying dataset and the row numbers in it."""
    offsets = None
    while isinstance(dataset, RowView):
        offsets = dataset.rows if offsets is None else dataset.rows[offsets]
        dataset = dataset.dataset
    return dataset, offsets
