"""Checks of the bundled openclipart image-caption files that ship inside the package."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

# Located from this file, not by importing in2r_graph, because that import
# loads PyTorch and takes seconds.
DATA_DIR = Path(__file__).resolve().parents[1] / "in2r_graph" / "data" / "bundled" / "openclipart"
SPLITS = ("train", "dev", "test")
THUMBNAIL_SHAPE = (32, 32, 3)
EMBEDDING_DIM = 384
SUFFIXES = ("_thumbs.npz", "_caps.txt", "_caps_minilm.npy", "_image_ids.txt")


def read_lines(path: Path) -> list[str]:
    """Return the lines of a UTF-8 text file that ends with a newline."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path} does not end with a newline"
    return text[:-1].split("\n")


@functools.cache
def load_split(split: str) -> dict[str, object]:
    """Load the four files of one split (cached across tests)."""
    with np.load(DATA_DIR / f"{split}_thumbs.npz") as archive:
        keys = sorted(archive.files)
        images = archive["images"]
    return {
        "keys": keys,
        "images": images,
        "captions": read_lines(DATA_DIR / f"{split}_caps.txt"),
        "embeddings": np.load(DATA_DIR / f"{split}_caps_minilm.npy"),
        "image_ids": read_lines(DATA_DIR / f"{split}_image_ids.txt"),
    }


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("split", SPLITS)
def test_split_file_exists(split, suffix):
    assert (DATA_DIR / f"{split}{suffix}").is_file()


def test_readme_exists():
    assert (DATA_DIR / "README.md").is_file()


def test_folder_size_under_limit():
    size = sum(path.stat().st_size for path in DATA_DIR.iterdir() if path.is_file())
    assert size < 15_000_000


@pytest.mark.parametrize("split", SPLITS)
def test_npz_contains_only_images(split):
    assert load_split(split)["keys"] == ["images"]


@pytest.mark.parametrize("split", SPLITS)
def test_lengths_agree(split):
    data = load_split(split)
    count = data["images"].shape[0]
    assert count > 0
    assert len(data["captions"]) == count
    assert data["embeddings"].shape[0] == count
    assert len(data["image_ids"]) == count


@pytest.mark.parametrize("split", SPLITS)
def test_shapes_and_dtypes(split):
    data = load_split(split)
    assert data["images"].shape[1:] == THUMBNAIL_SHAPE
    assert data["images"].dtype == np.uint8
    assert data["embeddings"].shape[1:] == (EMBEDDING_DIM,)
    assert data["embeddings"].dtype == np.float16


@pytest.mark.parametrize("split", SPLITS)
def test_captions_clean(split):
    captions = load_split(split)["captions"]
    assert all(caption.strip() for caption in captions)
    assert not any("\t" in caption for caption in captions)
    assert all(caption.splitlines() == [caption] for caption in captions)
    assert not any("HASH(0x" in caption for caption in captions)
    assert not any("http" in caption.lower() for caption in captions)


@pytest.mark.parametrize("split", SPLITS)
def test_embeddings_unit_norm(split):
    embeddings = load_split(split)["embeddings"].astype(np.float32)
    assert np.isfinite(embeddings).all()
    norms = np.linalg.norm(embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-2)


@pytest.mark.parametrize("split", SPLITS)
def test_thumbnails_not_constant(split):
    images = load_split(split)["images"]
    images = images.reshape(images.shape[0], -1)  # (M, 32 * 32 * 3)
    assert (images.max(axis=1) > images.min(axis=1)).all()


@pytest.mark.parametrize("split", SPLITS)
def test_image_ids_name_package_pngs(split):
    image_ids = load_split(split)["image_ids"]
    assert all(image_id.startswith("png/") and image_id.endswith(".png") for image_id in image_ids)
    assert not any(image_id.startswith("png/logos/") for image_id in image_ids)


def test_splits_disjoint_by_image_id():
    ids = {split: set(load_split(split)["image_ids"]) for split in SPLITS}
    assert sum(len(load_split(split)["image_ids"]) for split in SPLITS) == len(set.union(*ids.values()))
    assert not ids["train"] & ids["dev"]
    assert not ids["train"] & ids["test"]
    assert not ids["dev"] & ids["test"]


def test_captions_unique_across_splits():
    captions = [caption.lower() for split in SPLITS for caption in load_split(split)["captions"]]
    assert len(captions) == len(set(captions))


def test_split_proportions():
    counts = {split: len(load_split(split)["image_ids"]) for split in SPLITS}
    total = sum(counts.values())
    assert abs(counts["dev"] - 0.1 * total) <= 1
    assert abs(counts["test"] - 0.1 * total) <= 1
    assert counts["train"] == total - counts["dev"] - counts["test"]
