"""Readers for datasets in the precomp layout.

A dataset is a folder ``ROOT/NAME/`` that contains, for every split name
(``train``, ``dev``, ``test`` or any other):

- images, one of:

  - ``{split}_ims.npy``: float16 or float32 global features ``(M, D)`` or
    region features ``(M, R, D)``, memory-mapped and never read whole;
  - ``{split}_thumbs.npz`` with the array ``images``: uint8 thumbnails
    ``(M, H, W, 3)``, read whole.

  An optional ``{split}_regions.npy`` ``(M, R, D)`` contains alternative region
  features and is selected with ``image_features="regions"``.
- captions, one of:

  - ``{split}_caps.txt``: one caption per line. Image ``j`` owns lines
    ``j * k`` to ``(j + 1) * k - 1``, where ``k = N / M`` must be a whole number;
  - ``{split}_caps.tsv``: ``id<TAB>caption`` per line, one caption per image.

- optional caption embeddings ``{split}_caps_<name>.npy`` ``(N, E)``,
  float16 or float32, selected by ``text_features=<name>``;
- optional image ids ``{split}_image_ids.txt``, one per line.

Text files must be UTF-8 (a leading byte order mark is dropped). Lines may end
in ``\\n`` or ``\\r\\n``, and the final newline is optional. Captions are kept
exactly as written, but a line that is empty or only whitespace is invalid.
"""

from __future__ import annotations

import codecs
import logging
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import NPY_READ_ERRORS, DataError

__all__ = [
    "IMAGE_FEATURES",
    "PrecompSplit",
    "bundled_dataset_root",
    "load_dataset",
    "load_split",
]

logger = logging.getLogger(__name__)

IMAGE_FEATURES = ("ims", "regions")
"""Values of ``image_features``: the default image file, or ``{split}_regions.npy``."""

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))

# Elements per chunk for the NaN/inf check: 16M float32 values are 64 MB.
_FINITE_CHECK_ELEMENTS = 1 << 24

# Exceptions of np.load for a damaged .npz archive: besides those of a damaged
# .npy member, zipfile raises NotImplementedError or RuntimeError when a
# damaged flag reads as an unsupported feature (encryption, a newer zip
# version), and zlib raises zlib.error for damaged compressed data.
NPZ_READ_ERRORS = (*NPY_READ_ERRORS, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)

# Folder entries shown in a "missing file" message before the list is cut.
_MAX_LISTED_ENTRIES = 30


@dataclass
class PrecompSplit:
    """One split of a precomp dataset.

    Attributes:
        root: Dataset folder.
        split: Split name, the prefix of its files.
        images: Global or region features (a read-only memory map) or uint8
            thumbnails.
        image_kind: ``"global"``, ``"region"`` or ``"thumbnail"``.
        captions: The N captions, in file order.
        caption_embeddings: Precomputed caption embeddings, or None when no
            ``text_features`` was requested.
        captions_per_image: N / M.
        image_ids: Image names from ``{split}_image_ids.txt``, else the ids of
            a ``.tsv`` caption file, else None.

    Shapes:
        - images: ``(M, D)``, ``(M, R, D)`` or ``(M, H, W, 3)``
        - caption_embeddings: ``(N, E)``
    """

    root: Path
    split: str
    images: np.ndarray = field(repr=False)
    image_kind: str
    captions: list[str] = field(repr=False)
    caption_embeddings: np.ndarray | None = field(repr=False)
    captions_per_image: int
    image_ids: list[str] | None = field(repr=False)

    @property
    def num_images(self) -> int:
        """M, the number of images."""
        return int(self.images.shape[0])

    @property
    def num_captions(self) -> int:
        """N, the number of captions."""
        return len(self.captions)

    def clean_caption_to_image(self) -> np.ndarray:
        """Return the clean image index of every caption, ``i // captions_per_image``.

        Shapes:
            - output: ``(N,)`` int64
        """
        return np.arange(self.num_captions, dtype=np.int64) // self.captions_per_image


def bundled_dataset_root() -> Path:
    """Return the folder that contains the dataset folders shipped with the package.

    The bundled dataset is ``bundled_dataset_root() / "openclipart"``.
    """
    return Path(__file__).parent / "bundled"


def _describe_folder(root: Path) -> str:
    names = sorted(entry.name for entry in root.iterdir())
    if not names:
        return "the folder is empty"
    listing = ", ".join(names[:_MAX_LISTED_ENTRIES])
    if len(names) > _MAX_LISTED_ENTRIES:
        listing += f", ... ({len(names) - _MAX_LISTED_ENTRIES} more)"
    return f"the folder contains: {listing}"


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DataError(f"dataset folder {root} not found")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is a file; expected a dataset folder")
    if not any(root.iterdir()):
        raise DataError(f"dataset folder {root} is empty; expected precomp files such as train_ims.npy")


def _pick_one(root: Path, split: str, candidates: list[str], file_kind: str) -> Path:
    """Return the one existing file among ``candidates``, or raise DataError."""
    folders = [root / name for name in candidates if (root / name).is_dir()]
    if folders:
        raise DataError(f"{folders[0]} is a folder; expected the {file_kind} file of split {split!r}")
    present = [root / name for name in candidates if (root / name).is_file()]
    if len(present) > 1:
        raise DataError(
            f"{root}: found both {present[0].name} and {present[1].name} for split {split!r}; "
            f"expected exactly one {file_kind} file"
        )
    if not present:
        raise DataError(
            f"{root}: no {file_kind} file for split {split!r}; expected {' or '.join(candidates)}, "
            f"but {_describe_folder(root)}"
        )
    return present[0]


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as file:
        magic = file.read(len(np.lib.format.MAGIC_PREFIX))
    if magic != np.lib.format.MAGIC_PREFIX:
        raise DataError(f"{path}: file does not start with the .npy header; expected a NumPy .npy array")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except NPY_READ_ERRORS as err:
        raise DataError(f"{path}: failed to read as a .npy array ({err})") from err


def _check_float_array(path: Path, array: np.ndarray, shape_text: str, ndims: tuple[int, ...]) -> None:
    if array.ndim not in ndims:
        raise DataError(f"{path}: array has shape {array.shape}; expected {shape_text}")
    if array.dtype not in _FLOAT_DTYPES:
        raise DataError(f"{path}: array has dtype {array.dtype}; expected float16 or float32")
    if 0 in array.shape:
        raise DataError(f"{path}: array has shape {array.shape} with no elements; expected {shape_text}")


def _check_finite(path: Path, array: np.ndarray) -> None:
    """Raise DataError at the first row that contains NaN or inf, reading in chunks."""
    row_size = max(1, int(np.prod(array.shape[1:])))
    chunk_rows = max(1, _FINITE_CHECK_ELEMENTS // row_size)
    for start in range(0, array.shape[0], chunk_rows):
        chunk = np.asarray(array[start : start + chunk_rows]).reshape(-1, row_size)
        finite_rows = np.isfinite(chunk).all(axis=1)
        if not finite_rows.all():
            row = start + int(np.flatnonzero(~finite_rows)[0])
            raise DataError(
                f"{path}: row {row} contains NaN or inf; expected finite values. It is the first such row: "
                "recompute the features of that item or drop it from the split"
            )


def _load_thumbnails(path: Path) -> np.ndarray:
    # Open the file here because np.load (numpy 2.4) leaves its own file handle
    # open when the zip archive is corrupt.
    with open(path, "rb") as file:
        if file.read(2) != b"PK":
            raise DataError(f"{path}: file is not a zip archive; expected an .npz archive written by np.savez")
        file.seek(0)
        try:
            with np.load(file, allow_pickle=False) as archive:
                names = list(archive.files)
                images = archive["images"] if "images" in names else None
        except NPZ_READ_ERRORS as err:
            raise DataError(f"{path}: failed to read as an .npz archive ({err})") from err
    if images is None:
        raise DataError(f"{path}: archive contains arrays {names}; expected an array named 'images'")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(
            f"{path}: 'images' has dtype {images.dtype} and shape {images.shape}; "
            "expected uint8 thumbnails of shape (M, H, W, 3)"
        )
    if 0 in images.shape:
        raise DataError(f"{path}: 'images' has shape {images.shape} with no elements; expected (M, H, W, 3)")
    return images


def _load_images(root: Path, split: str, image_features: str, validate: bool) -> tuple[np.ndarray, str]:
    if image_features == "regions":
        path = root / f"{split}_regions.npy"
        if path.is_dir():
            raise DataError(f"{path} is a folder; expected the region features of split {split!r}")
        if not path.is_file():
            raise DataError(
                f"{root}: image_features='regions' needs {path.name}, which is missing; {_describe_folder(root)}"
            )
    else:
        path = _pick_one(root, split, [f"{split}_ims.npy", f"{split}_thumbs.npz"], "image")
        if path.suffix == ".npz":
            return _load_thumbnails(path), "thumbnail"

    images = _load_npy(path)
    if image_features == "regions":
        _check_float_array(path, images, "region features of shape (M, R, D)", (3,))
    else:
        _check_float_array(path, images, "global features (M, D) or region features (M, R, D)", (2, 3))
    if validate:
        _check_finite(path, images)
    return images, "global" if images.ndim == 2 else "region"


def _read_lines(path: Path) -> list[str]:
    """Read a UTF-8 text file as lines without their line endings."""
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        raise DataError(
            f"{path}: invalid UTF-8 byte 0x{data[offset]:02x} at byte offset {offset}; "
            "expected a UTF-8 text file"
        ) from err
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        return []
    # Split on "\n" only: str.splitlines would also split on characters such
    # as U+2028 or U+0085 that may occur inside a caption.
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _check_no_empty_line(path: Path, lines: list[str], item: str) -> None:
    if not lines:
        raise DataError(f"{path}: file has no lines; expected one {item} per line")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(f"{path}: line {number} is empty; expected one {item} per line")


def _load_captions(root: Path, split: str) -> tuple[list[str], list[str] | None, Path]:
    """Return the captions, the ids of a ``.tsv`` file (else None) and the file read."""
    path = _pick_one(root, split, [f"{split}_caps.txt", f"{split}_caps.tsv"], "caption")
    lines = _read_lines(path)
    if path.suffix == ".txt":
        _check_no_empty_line(path, lines, "caption")
        return lines, None, path

    if not lines:
        raise DataError(f"{path}: file has no lines; expected one 'id<TAB>caption' row per line")
    ids, captions = [], []
    for number, line in enumerate(lines, start=1):
        image_id, tab, caption = line.partition("\t")
        if not tab:
            raise DataError(f"{path}: line {number} has no tab; expected 'id<TAB>caption'")
        if not image_id.strip():
            raise DataError(f"{path}: line {number} has an empty id; expected 'id<TAB>caption'")
        if not caption.strip():
            raise DataError(f"{path}: line {number} has an empty caption; expected 'id<TAB>caption'")
        ids.append(image_id)
        captions.append(caption)
    return captions, ids, path


def _load_caption_embeddings(
    root: Path, split: str, name: str, num_captions: int, validate: bool
) -> np.ndarray:
    path = root / f"{split}_caps_{name}.npy"
    if not path.is_file():
        prefix, suffix = f"{split}_caps_", ".npy"
        names = sorted(
            entry.name[len(prefix) : -len(suffix)]
            for entry in root.iterdir()
            if entry.name.startswith(prefix) and entry.name.endswith(suffix)
        )
        found = ", ".join(map(repr, names)) if names else "none"
        raise DataError(
            f"{root}: text_features={name!r} needs {path.name}, which is missing; "
            f"caption embeddings present for split {split!r}: {found}"
        )
    embeddings = _load_npy(path)
    _check_float_array(path, embeddings, "caption embeddings of shape (N, E)", (2,))
    if embeddings.shape[0] != num_captions:
        raise DataError(
            f"{path}: {embeddings.shape[0]} rows, but the split has {num_captions} captions; "
            "expected one embedding per caption"
        )
    if validate:
        _check_finite(path, embeddings)
    return embeddings


def load_split(
    root: str | os.PathLike[str],
    split: str,
    *,
    image_features: str = "ims",
    text_features: str | None = None,
    validate: bool = True,
) -> PrecompSplit:
    """Load one split of a precomp dataset folder.

    Args:
        root: Dataset folder, e.g. ``bundled_dataset_root() / "openclipart"``.
        split: Split name, the prefix of its files (``"train"``, ``"dev"``, ...).
        image_features: ``"ims"`` reads ``{split}_ims.npy`` or
            ``{split}_thumbs.npz``; ``"regions"`` reads ``{split}_regions.npy``.
        text_features: Name of the caption embeddings to load from
            ``{split}_caps_<name>.npy`` (e.g. ``"minilm"``), or None for none.
        validate: Check features and embeddings for NaN and inf, in chunks.
            Shapes, dtypes, counts and text are always checked.

    Returns:
        The split. Arrays read from ``.npy`` files are read-only memory maps.

    Raises:
        DataError: If the folder or a file is missing, unreadable or
            inconsistent: a wrong dtype or number of dims, zero rows, NaN or
            inf, counts that disagree between files, an empty caption line, a
            row without a tab in a ``.tsv`` file, or text that is not UTF-8.
        ValueError: If ``split`` or ``image_features`` is not a valid value.
    """
    root = Path(root)
    if not isinstance(split, str) or not split or "/" in split or os.sep in split:
        raise ValueError(f"split must be a non-empty file name prefix, got {split!r}")
    if image_features not in IMAGE_FEATURES:
        raise ValueError(f"image_features must be one of {IMAGE_FEATURES}, got {image_features!r}")
    _check_root(root)

    images, image_kind = _load_images(root, split, image_features, validate)
    num_images = int(images.shape[0])
    captions, tsv_ids, captions_path = _load_captions(root, split)
    num_captions = len(captions)

    if tsv_ids is not None and num_captions != num_images:
        raise DataError(
            f"{captions_path}: {num_captions} rows, but the split has {num_images} images; "
            "expected one caption per image in a .tsv caption file"
        )
    if num_captions % num_images:
        raise DataError(
            f"{captions_path}: {num_captions} captions for {num_images} images is not a whole number "
            "of captions per image; expected N to be a multiple of M"
        )
    captions_per_image = num_captions // num_images

    image_ids = tsv_ids
    ids_path = root / f"{split}_image_ids.txt"
    if ids_path.is_file():
        image_ids = _read_lines(ids_path)
        _check_no_empty_line(ids_path, image_ids, "image id")
        if len(image_ids) != num_images:
            raise DataError(
                f"{ids_path}: {len(image_ids)} ids, but the split has {num_images} images; "
                "expected one id per image"
            )

    caption_embeddings = None
    if text_features is not None:
        caption_embeddings = _load_caption_embeddings(root, split, text_features, num_captions, validate)

    logger.debug(
        "Loaded split %r from %s: %d %s images, %d captions (%d per image)",
        split, root, num_images, image_kind, num_captions, captions_per_image,
    )
    return PrecompSplit(
        root=root,
        split=split,
        images=images,
        image_kind=image_kind,
        captions=captions,
        caption_embeddings=caption_embeddings,
        captions_per_image=captions_per_image,
        image_ids=image_ids,
    )


def load_dataset(
    root: str | os.PathLike[str],
    splits: tuple[str, ...] | list[str] = ("train", "dev", "test"),
    **kwargs,
) -> dict[str, PrecompSplit]:
    """Load several splits and check that their feature sizes agree.

    Args:
        root: Dataset folder.
        splits: Split names to load, in order.
        **kwargs: Passed to :func:`load_split` (``image_features``,
            ``text_features``, ``validate``).

    Returns:
        The splits by name, in the order of ``splits``.

    Raises:
        DataError: If a split fails to load, or two splits differ in image
            kind, per-image feature shape or caption embedding size.
        ValueError: If ``splits`` is empty or repeats a name.
    """
    splits = list(splits)
    if not splits:
        raise ValueError("splits must name at least one split, got an empty sequence")
    if len(set(splits)) != len(splits):
        raise ValueError(f"splits must not repeat a name, got {splits}")

    loaded = {name: load_split(root, name, **kwargs) for name in splits}

    first = loaded[splits[0]]
    for name in splits[1:]:
        other = loaded[name]
        if other.image_kind != first.image_kind or other.images.shape[1:] != first.images.shape[1:]:
            raise DataError(
                f"{Path(root)}: split {name!r} has {other.image_kind} images of shape "
                f"{other.images.shape}, but split {splits[0]!r} has {first.image_kind} images of "
                f"shape {first.images.shape}; expected the same kind and per-image shape in every split"
            )
        if first.caption_embeddings is not None and other.caption_embeddings is not None:
            size, other_size = first.caption_embeddings.shape[1], other.caption_embeddings.shape[1]
            if size != other_size:
                raise DataError(
                    f"{Path(root)}: split {name!r} has caption embeddings of size {other_size}, but "
                    f"split {splits[0]!r} has size {size}; expected the same size in every split"
                )
    return loaded
