"""Tests for the precomp dataset readers, on real files written to tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from in2r_graph.data import precomp
from in2r_graph.data.errors import DataError
from in2r_graph.data.precomp import PrecompSplit, bundled_dataset_root, load_dataset, load_split

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR8K = SHARED_DATA / "flickr8k_precomp"
OPENCLIPART = bundled_dataset_root() / "openclipart"

PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)


def write_split(
    root: Path,
    split: str = "train",
    *,
    num_images: int = 3,
    per_image: int = 2,
    feature_shape: tuple[int, ...] = (4,),
    dtype=np.float32,
    embedding_size: int | None = 6,
    image_ids: bool = False,
) -> dict[str, np.ndarray | list[str]]:
    """Write a valid split with global features and .txt captions; return what was written."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    images = rng.standard_normal((num_images, *feature_shape)).astype(dtype)
    np.save(root / f"{split}_ims.npy", images)
    captions = [f"image {j} caption {k}" for j in range(num_images) for k in range(per_image)]
    (root / f"{split}_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    written: dict[str, np.ndarray | list[str]] = {"images": images, "captions": captions}
    if embedding_size is not None:
        embeddings = rng.standard_normal((len(captions), embedding_size)).astype(np.float16)
        np.save(root / f"{split}_caps_minilm.npy", embeddings)
        written["embeddings"] = embeddings
    if image_ids:
        ids = [f"img{j}.jpg" for j in range(num_images)]
        (root / f"{split}_image_ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
        written["image_ids"] = ids
    return written


def test_global_features_roundtrip(tmp_path):
    written = write_split(tmp_path, image_ids=True)
    split = load_split(tmp_path, "train", text_features="minilm")
    assert isinstance(split, PrecompSplit)
    assert split.image_kind == "global"
    assert isinstance(split.images, np.memmap)
    assert np.array_equal(split.images, written["images"])
    assert split.captions == written["captions"]
    assert np.array_equal(split.caption_embeddings, written["embeddings"])
    assert split.captions_per_image == 2
    assert split.image_ids == written["image_ids"]
    assert split.num_images == 3
    assert split.num_captions == 6
    assert split.root == tmp_path
    assert split.split == "train"


def test_clean_caption_to_image(tmp_path):
    write_split(tmp_path, num_images=3, per_image=2)
    mapping = load_split(tmp_path, "train").clean_caption_to_image()
    assert mapping.dtype == np.int64
    assert mapping.tolist() == [0, 0, 1, 1, 2, 2]


def test_embeddings_optional(tmp_path):
    write_split(tmp_path)
    split = load_split(tmp_path, "train")
    assert split.caption_embeddings is None
    assert split.image_ids is None


def test_region_features_in_ims(tmp_path):
    write_split(tmp_path, feature_shape=(5, 4), dtype=np.float16)
    split = load_split(tmp_path, "train")
    assert split.image_kind == "region"
    assert split.images.shape == (3, 5, 4)
    assert split.images.dtype == np.float16


def test_regions_file_selected(tmp_path):
    write_split(tmp_path)
    regions = np.ones((3, 9, 8), dtype=np.float16)
    np.save(tmp_path / "train_regions.npy", regions)
    split = load_split(tmp_path, "train", image_features="regions")
    assert split.image_kind == "region"
    assert np.array_equal(split.images, regions)


def test_thumbnails_loaded_whole(tmp_path):
    thumbs = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    np.savez_compressed(tmp_path / "train_thumbs.npz", images=thumbs)
    (tmp_path / "train_caps.txt").write_text("a red star\na blue flag\n", encoding="utf-8")
    split = load_split(tmp_path, "train")
    assert split.image_kind == "thumbnail"
    assert not isinstance(split.images, np.memmap)
    assert np.array_equal(split.images, thumbs)
    assert split.captions_per_image == 1


def test_tsv_captions_give_ids(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 3), dtype=np.float32))
    (tmp_path / "train_caps.tsv").write_text("a1\tfirst caption\nb2\tsecond\twith tab\n", encoding="utf-8")
    split = load_split(tmp_path, "train")
    assert split.captions == ["first caption", "second\twith tab"]
    assert split.image_ids == ["a1", "b2"]
    assert split.captions_per_image == 1


def test_ids_file_preferred_over_tsv(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((1, 3), dtype=np.float32))
    (tmp_path / "train_caps.tsv").write_text("tsv-id\ta caption\n", encoding="utf-8")
    (tmp_path / "train_image_ids.txt").write_text("file-id\n", encoding="utf-8")
    assert load_split(tmp_path, "train").image_ids == ["file-id"]


def test_crlf_bom_and_no_final_newline(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 3), dtype=np.float32))
    (tmp_path / "train_caps.txt").write_bytes(b"\xef\xbb\xbffirst one\r\nsecond one")
    assert load_split(tmp_path, "train").captions == ["first one", "second one"]


def test_unicode_separators_kept(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 3), dtype=np.float32))
    captions = ["caf\u00e9 \u2028 line", "tab\tand \x85 next"]
    (tmp_path / "train_caps.txt").write_text("\n".join(captions), encoding="utf-8")
    assert load_split(tmp_path, "train").captions == captions


def test_load_dataset_all_splits(tmp_path):
    for name in ("train", "dev", "test"):
        write_split(tmp_path, name)
    splits = load_dataset(tmp_path, text_features="minilm")
    assert list(splits) == ["train", "dev", "test"]
    assert all(split.caption_embeddings.shape == (6, 6) for split in splits.values())


def test_bundled_root_location():
    assert bundled_dataset_root() == Path(precomp.__file__).parent / "bundled"


# ---- invalid input -------------------------------------------------------


def test_captions_not_multiple_of_images(tmp_path):
    write_split(tmp_path, embedding_size=None)
    (tmp_path / "train_caps.txt").write_text("\n".join(["c"] * 7), encoding="utf-8")
    with pytest.raises(DataError, match="7 captions for 3 images") as info:
        load_split(tmp_path, "train")
    assert "train_caps.txt" in str(info.value)


def test_tsv_row_without_tab(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 3), dtype=np.float32))
    (tmp_path / "train_caps.tsv").write_text("a\tfirst\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 has no tab"):
        load_split(tmp_path, "train")


def test_tsv_empty_caption(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 3), dtype=np.float32))
    (tmp_path / "train_caps.tsv").write_text("a\tfirst\nb\t  \n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 has an empty caption"):
        load_split(tmp_path, "train")


def test_tsv_empty_id(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 3), dtype=np.float32))
    (tmp_path / "train_caps.tsv").write_text("\tfirst\nb\tsecond\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1 has an empty id"):
        load_split(tmp_path, "train")


def test_tsv_count_mismatch(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((1, 3), dtype=np.float32))
    (tmp_path / "train_caps.tsv").write_text("a\tfirst\nb\tsecond\n", encoding="utf-8")
    with pytest.raises(DataError, match="2 rows, but the split has 1 images"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_empty_caption_line(tmp_path, blank):
    np.save(tmp_path / "train_ims.npy", np.zeros((3, 3), dtype=np.float32))
    (tmp_path / "train_caps.txt").write_text(f"one\n{blank}\nthree\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is empty"):
        load_split(tmp_path, "train")


def test_empty_caption_file(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((3, 3), dtype=np.float32))
    (tmp_path / "train_caps.txt").write_bytes(b"")
    with pytest.raises(DataError, match="no lines"):
        load_split(tmp_path, "train")


def test_non_utf8_captions(tmp_path):
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 3), dtype=np.float32))
    (tmp_path / "train_caps.txt").write_bytes(b"a dog\n\xe9t\xe9\n")
    with pytest.raises(DataError, match="byte offset 6") as info:
        load_split(tmp_path, "train")
    assert "train_caps.txt" in str(info.value)
    assert "0xe9" in str(info.value)


def test_missing_embeddings_lists_names(tmp_path):
    write_split(tmp_path)
    np.save(tmp_path / "train_caps_clip.npy", np.zeros((6, 2), dtype=np.float32))
    with pytest.raises(DataError, match="'clip', 'minilm'") as info:
        load_split(tmp_path, "train", text_features="bert")
    assert "train_caps_bert.npy" in str(info.value)


def test_embedding_rows_mismatch(tmp_path):
    write_split(tmp_path)
    np.save(tmp_path / "train_caps_minilm.npy", np.zeros((5, 6), dtype=np.float32))
    with pytest.raises(DataError, match="5 rows, but the split has 6 captions"):
        load_split(tmp_path, "train", text_features="minilm")


def test_image_ids_count_mismatch(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train_image_ids.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="2 ids, but the split has 3 images"):
        load_split(tmp_path, "train")


def test_nan_in_features(tmp_path):
    write_split(tmp_path)
    images = np.load(tmp_path / "train_ims.npy")
    images[2, 1] = np.nan
    np.save(tmp_path / "train_ims.npy", images)
    with pytest.raises(DataError, match="row 2 contains NaN or inf") as info:
        load_split(tmp_path, "train")
    assert "train_ims.npy" in str(info.value)


def test_inf_in_embeddings(tmp_path):
    write_split(tmp_path)
    embeddings = np.load(tmp_path / "train_caps_minilm.npy")
    embeddings[4, 0] = np.inf
    np.save(tmp_path / "train_caps_minilm.npy", embeddings)
    with pytest.raises(DataError, match="row 4 contains NaN or inf"):
        load_split(tmp_path, "train", text_features="minilm")


def test_nan_found_in_later_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(precomp, "_FINITE_CHECK_ELEMENTS", 8)
    write_split(tmp_path, num_images=10, per_image=1, feature_shape=(3,), embedding_size=None)
    images = np.load(tmp_path / "train_ims.npy")
    images[7, 2] = np.nan
    np.save(tmp_path / "train_ims.npy", images)
    with pytest.raises(DataError, match=re.escape("row 7 contains NaN or inf; expected finite values")):
        load_split(tmp_path, "train")


def test_feature_path_that_is_a_folder(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train_ims.npy").unlink()
    (tmp_path / "train_ims.npy").mkdir()

    with pytest.raises(DataError, match="train_ims.npy is a folder; expected the image file of split 'train'"):
        load_split(tmp_path, "train")


def test_validate_false_skips_finite_check(tmp_path):
    write_split(tmp_path)
    images = np.load(tmp_path / "train_ims.npy")
    images[0, 0] = np.nan
    np.save(tmp_path / "train_ims.npy", images)
    split = load_split(tmp_path, "train", validate=False)
    assert np.isnan(split.images[0, 0])


def test_zero_rows(tmp_path):
    write_split(tmp_path)
    np.save(tmp_path / "train_ims.npy", np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(DataError, match=re.escape("shape (0, 4) with no elements")):
        load_split(tmp_path, "train")


def test_features_wrong_ndim(tmp_path):
    write_split(tmp_path)
    np.save(tmp_path / "train_ims.npy", np.zeros(3, dtype=np.float32))
    with pytest.raises(DataError, match=re.escape("shape (3,); expected global features (M, D)")):
        load_split(tmp_path, "train")


def test_regions_wrong_ndim(tmp_path):
    write_split(tmp_path)
    np.save(tmp_path / "train_regions.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(DataError, match=re.escape("shape (3, 4); expected region features of shape (M, R, D)")):
        load_split(tmp_path, "train", image_features="regions")


def test_embeddings_wrong_ndim(tmp_path):
    write_split(tmp_path)
    np.save(tmp_path / "train_caps_minilm.npy", np.zeros((6, 2, 3), dtype=np.float32))
    with pytest.raises(DataError, match=re.escape("shape (6, 2, 3); expected caption embeddings")):
        load_split(tmp_path, "train", text_features="minilm")


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_features_wrong_dtype(tmp_path, dtype):
    write_split(tmp_path)
    np.save(tmp_path / "train_ims.npy", np.zeros((3, 4), dtype=dtype))
    with pytest.raises(DataError, match=f"dtype {np.dtype(dtype)}; expected float16 or float32"):
        load_split(tmp_path, "train")


def test_thumbnails_wrong_dtype(tmp_path):
    np.savez(tmp_path / "train_thumbs.npz", images=np.zeros((2, 4, 4, 3), dtype=np.float32))
    (tmp_path / "train_caps.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected uint8 thumbnails"):
        load_split(tmp_path, "train")


def test_thumbnails_array_missing(tmp_path):
    np.savez(tmp_path / "train_thumbs.npz", pixels=np.zeros((2, 4, 4, 3), dtype=np.uint8))
    (tmp_path / "train_caps.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected an array named 'images'"):
        load_split(tmp_path, "train")


def test_corrupt_npy(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train_ims.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match="does not start with the .npy header"):
        load_split(tmp_path, "train")


def test_truncated_npy(tmp_path):
    write_split(tmp_path)
    data = (tmp_path / "train_ims.npy").read_bytes()
    (tmp_path / "train_ims.npy").write_bytes(data[:-8])
    with pytest.raises(DataError, match="failed to read"):
        load_split(tmp_path, "train")


def test_corrupt_npz(tmp_path):
    (tmp_path / "train_thumbs.npz").write_bytes(b"PK\x03\x04broken")
    (tmp_path / "train_caps.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(DataError, match="failed to read as an .npz archive"):
        load_split(tmp_path, "train")


def test_thumbnails_not_zip(tmp_path):
    with open(tmp_path / "train_thumbs.npz", "wb") as file:
        np.save(file, np.zeros((1, 2, 2, 3), dtype=np.uint8))
    (tmp_path / "train_caps.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(DataError, match="not a zip archive"):
        load_split(tmp_path, "train")


def test_missing_split_lists_folder(tmp_path):
    write_split(tmp_path)
    with pytest.raises(DataError, match="no image file for split 'dev'") as info:
        load_split(tmp_path, "dev")
    assert "train_caps.txt, train_caps_minilm.npy, train_ims.npy" in str(info.value)


def test_missing_captions(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train_caps.txt").unlink()
    with pytest.raises(DataError, match="expected train_caps.txt or train_caps.tsv"):
        load_split(tmp_path, "train")


def test_missing_regions_file(tmp_path):
    write_split(tmp_path)
    with pytest.raises(DataError, match="needs train_regions.npy, which is missing"):
        load_split(tmp_path, "train", image_features="regions")


def test_both_image_files(tmp_path):
    write_split(tmp_path)
    np.savez(tmp_path / "train_thumbs.npz", images=np.zeros((3, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="found both train_ims.npy and train_thumbs.npz"):
        load_split(tmp_path, "train")


def test_both_caption_files(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train_caps.tsv").write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(DataError, match="found both train_caps.txt and train_caps.tsv"):
        load_split(tmp_path, "train")


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        load_split(tmp_path, "train")


def test_file_instead_of_directory(tmp_path):
    path = tmp_path / "train_ims.npy"
    np.save(path, np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(DataError, match="is a file; expected a dataset folder"):
        load_split(path, "train")


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_split(tmp_path / "absent", "train")


def test_invalid_arguments(tmp_path):
    write_split(tmp_path)
    with pytest.raises(ValueError, match="image_features"):
        load_split(tmp_path, "train", image_features="grid")
    with pytest.raises(ValueError, match="split"):
        load_split(tmp_path, "../train")
    with pytest.raises(ValueError, match="at least one split"):
        load_dataset(tmp_path, splits=())


def test_feature_size_differs_between_splits(tmp_path):
    write_split(tmp_path, "train", feature_shape=(4,))
    write_split(tmp_path, "dev", feature_shape=(5,))
    with pytest.raises(DataError, match="split 'dev' has global images of shape \\(3, 5\\)"):
        load_dataset(tmp_path, splits=("train", "dev"))


def test_image_kind_differs_between_splits(tmp_path):
    write_split(tmp_path, "train", feature_shape=(4,))
    write_split(tmp_path, "dev", feature_shape=(2, 4))
    with pytest.raises(DataError, match="expected the same kind and per-image shape"):
        load_dataset(tmp_path, splits=("train", "dev"))


def test_embedding_size_differs_between_splits(tmp_path):
    write_split(tmp_path, "train", embedding_size=6)
    write_split(tmp_path, "dev", embedding_size=8)
    with pytest.raises(DataError, match="caption embeddings of size 8"):
        load_dataset(tmp_path, splits=("train", "dev"), text_features="minilm")


# ---- property-based round trips -----------------------------------------

caption_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\n\r\ufeff"),
    min_size=1,
    max_size=20,
).filter(lambda text: text.strip())
id_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\t\n\r\ufeff"),
    min_size=1,
    max_size=10,
).filter(lambda text: text.strip())


@PROPERTY_SETTINGS
@given(
    num_images=st.integers(min_value=1, max_value=4),
    per_image=st.integers(min_value=1, max_value=3),
    feature_shape=st.sampled_from([(1,), (5,), (2, 3), (4, 1)]),
    dtype=st.sampled_from([np.float16, np.float32]),
    embedding_size=st.none() | st.integers(min_value=1, max_value=5),
    data=st.data(),
)
def test_txt_split_roundtrip_property(
    tmp_path_factory, num_images, per_image, feature_shape, dtype, embedding_size, data
):
    root = tmp_path_factory.mktemp("precomp")
    rng = np.random.default_rng(num_images * 100 + per_image)
    images = rng.standard_normal((num_images, *feature_shape)).astype(dtype)
    np.save(root / "dev_ims.npy", images)
    num_captions = num_images * per_image
    captions = data.draw(st.lists(caption_text, min_size=num_captions, max_size=num_captions))
    (root / "dev_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    text_features = None
    if embedding_size is not None:
        embeddings = rng.standard_normal((num_captions, embedding_size)).astype(np.float32)
        np.save(root / "dev_caps_emb.npy", embeddings)
        text_features = "emb"

    split = load_split(root, "dev", text_features=text_features)

    assert np.array_equal(split.images, images)
    assert split.images.dtype == dtype
    assert split.image_kind == ("global" if len(feature_shape) == 1 else "region")
    assert split.captions == captions
    assert split.captions_per_image == per_image
    assert split.clean_caption_to_image().tolist() == [i // per_image for i in range(num_captions)]
    if embedding_size is None:
        assert split.caption_embeddings is None
    else:
        assert np.array_equal(split.caption_embeddings, embeddings)


@PROPERTY_SETTINGS
@given(rows=st.lists(st.tuples(id_text, caption_text), min_size=1, max_size=5), windows=st.booleans())
def test_tsv_split_roundtrip_property(tmp_path_factory, rows, windows):
    root = tmp_path_factory.mktemp("precomp")
    thumbs = np.full((len(rows), 2, 2, 3), 7, dtype=np.uint8)
    np.savez_compressed(root / "test_thumbs.npz", images=thumbs)
    newline = "\r\n" if windows else "\n"
    text = newline.join(f"{image_id}\t{caption}" for image_id, caption in rows)
    (root / "test_caps.tsv").write_text(text, encoding="utf-8", newline="")

    split = load_split(root, "test")

    assert split.image_kind == "thumbnail"
    assert np.array_equal(split.images, thumbs)
    assert split.image_ids == [image_id for image_id, _ in rows]
    assert split.captions == [caption for _, caption in rows]
    assert split.captions_per_image == 1


# ---- real data -----------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not FLICKR8K.is_dir(), reason=f"shared Flickr8k precomp data not found at {FLICKR8K}")
def test_flickr8k_dataset():
    splits = load_dataset(FLICKR8K, text_features="minilm")
    train = splits["train"]
    assert train.images.shape == (6000, 1280)
    assert train.num_captions == 30000
    assert train.captions_per_image == 5
    assert train.caption_embeddings.shape == (30000, 384)
    assert len(train.image_ids) == 6000
    assert splits["test"].num_images == 1000


@pytest.mark.shared_data
@pytest.mark.skipif(not FLICKR8K.is_dir(), reason=f"shared Flickr8k precomp data not found at {FLICKR8K}")
def test_flickr8k_regions():
    split = load_split(FLICKR8K, "dev", image_features="regions")
    assert split.image_kind == "region"
    assert split.images.shape == (1000, 9, 256)


@pytest.mark.skipif(not OPENCLIPART.is_dir(), reason=f"bundled dataset not built yet at {OPENCLIPART}")
def test_bundled_openclipart():
    split = load_split(OPENCLIPART, "train", text_features="minilm")
    assert split.image_kind == "thumbnail"
    assert split.captions_per_image == 1
    assert split.caption_embeddings.shape[0] == split.num_captions
    assert len(split.image_ids) == split.num_images
