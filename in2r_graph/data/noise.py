"""Synthetic noisy correspondence: the caption-level and image-level conventions.

Benchmarks corrupt a share ``r`` of the training pairs in one of two ways, and
published numbers differ between them at the same ``r``, so the convention is
always named explicitly:

``"caption"``
    Choose ``round(r * N)`` caption indices at random and shuffle their image
    indices among themselves. The stored array has shape ``(N,)`` and is the
    noisy ``caption_to_image`` itself.
``"image"``
    Choose ``round(r * M)`` images and permute them among themselves, so all
    captions of a chosen image move together. The stored array has shape
    ``(M,)`` and is a permutation ``perm`` of ``range(M)``: caption ``i`` of
    image ``j`` is paired with image ``perm[j]``. A per-caption form of shape
    ``(N,)``, which repeats ``perm[j]`` for every caption of image ``j``, is
    also accepted.

``round`` is Python's ``round`` (halves go to the even integer). A shuffle can
leave an index in place, so the realised noise rate (see
:func:`realised_noise_rate`) is usually slightly below ``r``.
"""

from __future__ import annotations

import logging
import numbers
import os
import secrets
from pathlib import Path

import numpy as np

from .errors import NPY_READ_ERRORS, DataError

__all__ = [
    "CONVENTIONS",
    "load_noise",
    "make_noise",
    "noisy_caption_to_image",
    "realised_noise_rate",
    "save_noise",
]

logger = logging.getLogger(__name__)

CONVENTIONS = ("caption", "image")

_INT32 = np.iinfo(np.int32)
_INT64 = np.iinfo(np.int64)


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise DataError(
            f"unknown noise convention {convention!r}; expected one of {', '.join(map(repr, CONVENTIONS))}"
        )


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _check_ratio(ratio: object) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise ValueError(f"ratio must be a number in [0, 1), got {ratio!r}")
    value = float(ratio)
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError(f"ratio must be in [0, 1), got {ratio!r}")
    return value


def _check_integer_array(noise: np.ndarray, source: str, convention: str) -> None:
    if noise.dtype.kind not in "iu":
        raise DataError(
            f"{source}: noise array has dtype {noise.dtype} (shape {noise.shape}, convention "
            f"{convention!r}); expected an integer array of image indices"
        )
    if noise.ndim != 1:
        raise DataError(
            f"{source}: noise array has shape {noise.shape} (convention {convention!r}); "
            "expected a one-dimensional array"
        )


def _check_range(noise: np.ndarray, num_images: int, source: str, convention: str) -> None:
    bad = np.flatnonzero((noise < 0) | (noise >= num_images))
    if bad.size:
        index = int(bad[0])
        raise DataError(
            f"{source}: noise array of shape {noise.shape} (convention {convention!r}) contains "
            f"{noise[index]} at index {index} ({bad.size} values out of range); expected image "
            f"indices in [0, {num_images})"
        )


def _check_permutation(perm: np.ndarray, source: str, shape: tuple[int, ...]) -> None:
    counts = np.bincount(perm, minlength=perm.size)
    repeated = np.flatnonzero(counts > 1)
    if repeated.size:
        image = int(repeated[0])
        raise DataError(
            f"{source}: noise array of shape {shape} (convention 'image') is not a permutation "
            f"of range({perm.size}), because image {image} appears {counts[image]} times and "
            f"{int(np.count_nonzero(counts == 0))} images never appear; expected each image "
            "index exactly once"
        )


def make_noise(
    num_images: int,
    captions_per_image: int,
    ratio: float,
    convention: str,
    seed: int | None,
) -> np.ndarray:
    """Draw synthetic noise under the named convention.

    The captions of image ``j`` are ``j * captions_per_image`` to
    ``(j + 1) * captions_per_image - 1``, as in the precomp layout.

    Args:
        num_images: M, the number of images.
        captions_per_image: Captions per image, so N = M * captions_per_image.
        ratio: Share r of captions (``"caption"``) or images (``"image"``)
            to shuffle, in [0, 1).
        convention: ``"caption"`` or ``"image"``.
        seed: Seed for :func:`numpy.random.default_rng`.

    Returns:
        For ``"caption"``, the noisy ``caption_to_image`` of shape ``(N,)``.
        For ``"image"``, an image permutation of shape ``(M,)``. Both are int64.

    Raises:
        DataError: If ``convention`` is unknown.
        ValueError: If ``ratio`` is not a number in [0, 1) or a count is below 1.
        TypeError: If a count is not an integer.
    """
    _check_convention(convention)
    num_images = _check_positive_int("num_images", num_images)
    captions_per_image = _check_positive_int("captions_per_image", captions_per_image)
    ratio = _check_ratio(ratio)
    rng = np.random.default_rng(seed)

    if convention == "caption":
        num_captions = num_images * captions_per_image
        clean = np.arange(num_captions, dtype=np.int64) // captions_per_image
        chosen = rng.choice(num_captions, size=round(ratio * num_captions), replace=False)
        noisy = clean.copy()
        noisy[chosen] = clean[chosen][rng.permutation(chosen.size)]
        return noisy

    perm = np.arange(num_images, dtype=np.int64)
    chosen = rng.choice(num_images, size=round(ratio * num_images), replace=False)
    perm[chosen] = chosen[rng.permutation(chosen.size)]
    return perm


def noisy_caption_to_image(
    noise: np.ndarray,
    convention: str,
    num_images: int,
    captions_per_image: int,
    *,
    source: str = "<array>",
) -> np.ndarray:
    """Validate a noise array and turn it into the noisy ``caption_to_image``.

    When N == M (one caption per image) both conventions expect the same
    length, so only the named convention decides how the array is read.

    Args:
        noise: Caption-level ``(N,)`` array, image permutation ``(M,)``, or
            the per-caption form ``(N,)`` of an image permutation.
        convention: ``"caption"`` or ``"image"``.
        num_images: M, the number of images.
        captions_per_image: Captions per image, so N = M * captions_per_image.
        source: Name of the array's origin (usually a file path), used in
            error messages.

    Returns:
        The image index of every caption, int64 of shape ``(N,)``.

    Raises:
        DataError: If the convention is unknown, the dtype is not an integer
            type, the length does not fit the convention or a value is outside
            [0, M). Under ``"image"``, also if the array is not a permutation
            or its per-caption form mixes values within a caption group.

    Shapes:
        - noise: ``(N,)`` or ``(M,)``
        - output: ``(N,)``
    """
    _check_convention(convention)
    num_images = _check_positive_int("num_images", num_images)
    captions_per_image = _check_positive_int("captions_per_image", captions_per_image)
    num_captions = num_images * captions_per_image
    noise = np.asarray(noise)
    _check_integer_array(noise, source, convention)
    length = noise.shape[0]
    expected = (
        f"{num_images} images x {captions_per_image} captions per image = {num_captions} captions"
    )

    if convention == "caption":
        if length != num_captions:
            if length == num_images:
                raise DataError(
                    f"{source}: noise array has shape ({length},), which looks like an image "
                    f"permutation over {num_images} images, but convention 'caption' expects shape "
                    f"({num_captions},) with one image index per caption ({expected}); pass "
                    "--noise-convention image if the file contains image-level noise"
                )
            raise DataError(
                f"{source}: noise array has shape ({length},); convention 'caption' expects shape "
                f"({num_captions},) with one image index per caption ({expected})"
            )
        _check_range(noise, num_images, source, convention)
        return noise.astype(np.int64)

    if length == num_images:
        _check_range(noise, num_images, source, convention)
        perm = noise.astype(np.int64)
        _check_permutation(perm, source, noise.shape)
        return np.repeat(perm, captions_per_image)

    if length != num_captions:
        raise DataError(
            f"{source}: noise array has shape ({length},); convention 'image' expects an image "
            f"permutation of shape ({num_images},) or its per-caption form of shape "
            f"({num_captions},) ({expected})"
        )

    _check_range(noise, num_images, source, convention)
    groups = noise.astype(np.int64).reshape(num_images, captions_per_image)  # (M, captions_per_image)
    mixed = np.flatnonzero((groups != groups[:, :1]).any(axis=1))
    if mixed.size:
        image = int(mixed[0])
        first = image * captions_per_image
        raise DataError(
            f"{source}: noise array has shape ({length},), but convention 'image' expects an image "
            f"permutation of shape ({num_images},) or a per-caption form that repeats one value for "
            f"all {captions_per_image} captions of an image; captions {first}..{first + captions_per_image - 1} "
            f"of image {image} have image indices {groups[image].tolist()}; pass --noise-convention caption "
            "if the file contains caption-level noise"
        )
    _check_permutation(groups[:, 0], source, noise.shape)
    return groups.reshape(-1)


def realised_noise_rate(caption_to_image: np.ndarray, captions_per_image: int) -> float:
    """Compute the share of captions not paired with their own image.

    Caption ``i`` belongs to image ``i // captions_per_image``.

    Args:
        caption_to_image: Image index of every caption.
        captions_per_image: Captions per image in the clean data.

    Returns:
        The fraction of captions whose image index differs from the clean one.

    Raises:
        ValueError: If ``caption_to_image`` is not a non-empty 1-D array.

    Shapes:
        - caption_to_image: ``(N,)``
    """
    captions_per_image = _check_positive_int("captions_per_image", captions_per_image)
    caption_to_image = np.asarray(caption_to_image)
    if caption_to_image.ndim != 1 or caption_to_image.size == 0:
        raise ValueError(
            f"caption_to_image must be a non-empty 1-D array, got shape {caption_to_image.shape}"
        )
    clean = np.arange(caption_to_image.size) // captions_per_image
    return float(np.mean(caption_to_image != clean))


def save_noise(path: str | os.PathLike[str], noise: np.ndarray) -> None:
    """Write a noise array to a ``.npy`` file atomically.

    The array is stored as int32 when all values fit and as int64 otherwise.
    It is written to a temporary file in the same folder and renamed over
    ``path``, so a reader never sees a partial file. ``path`` is used as
    given: no ``.npy`` suffix is appended.

    Args:
        path: Destination file.
        noise: Integer array of either convention.

    Raises:
        DataError: If ``noise`` is not a non-empty 1-D integer array or contains
            values outside the int64 range.

    Shapes:
        - noise: ``(N,)`` or ``(M,)``
    """
    path = Path(path)
    noise = np.asarray(noise)
    if noise.dtype.kind not in "iu" or noise.ndim != 1 or noise.size == 0:
        raise DataError(
            f"{path}: cannot save noise array of dtype {noise.dtype} and shape {noise.shape}; "
            "expected a non-empty 1-D integer array"
        )
    low, high = int(noise.min()), int(noise.max())
    if _INT32.min <= low and high <= _INT32.max:
        noise = noise.astype(np.int32)
    elif _INT64.min <= low and high <= _INT64.max:
        noise = noise.astype(np.int64)
    else:
        raise DataError(f"{path}: noise array contains {high}, which does not fit in int64")

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as file:
            np.save(file, noise)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.debug("Saved noise array of shape %s (%s) to %s", noise.shape, noise.dtype, path)


def load_noise(
    path: str | os.PathLike[str],
    convention: str,
    num_images: int,
    captions_per_image: int,
) -> np.ndarray:
    """Read a noise file and return the noisy ``caption_to_image``.

    Args:
        path: A ``.npy`` file with one integer array of the named convention.
        convention: ``"caption"`` or ``"image"``.
        num_images: M, the number of images.
        captions_per_image: Captions per image, so N = M * captions_per_image.

    Returns:
        The image index of every caption, int64 of shape ``(N,)``.

    Raises:
        DataError: If the file is missing or unreadable, or its array does not
            fit the convention (see :func:`noisy_caption_to_image`).

    Shapes:
        - output: ``(N,)``
    """
    _check_convention(convention)
    path = Path(path)
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "not found"
        raise DataError(f"noise file {path} {state}; expected a .npy file with one integer array")
    with open(path, "rb") as file:
        magic = file.read(len(np.lib.format.MAGIC_PREFIX))
    if magic != np.lib.format.MAGIC_PREFIX:
        kind = "an .npz archive" if magic.startswith(b"PK") else "not a .npy file"
        raise DataError(f"{path}: file is {kind}; expected a .npy file with one integer array")
    try:
        loaded = np.load(path, allow_pickle=False)
    except NPY_READ_ERRORS as err:
        raise DataError(f"{path}: failed to read as a .npy file ({err})") from err
    return noisy_caption_to_image(loaded, convention, num_images, captions_per_image, source=str(path))
