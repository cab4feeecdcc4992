"""Tests for the caption-level and image-level noise conventions."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from in2r_graph.data.errors import DataError
from in2r_graph.data.noise import (
    CONVENTIONS,
    load_noise,
    make_noise,
    noisy_caption_to_image,
    realised_noise_rate,
    save_noise,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR8K_NOISE = SHARED_DATA / "flickr8k_precomp" / "noise" / "train_cap2img_noise0.4_seed1234.npy"

PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)


def test_conventions_named():
    assert CONVENTIONS == ("caption", "image")


def test_caption_noise_rate_near_ratio():
    noise = make_noise(6000, 5, 0.4, "caption", seed=0)
    rate = realised_noise_rate(noise, 5)
    assert noise.shape == (30000,)
    assert noise.dtype == np.int64
    assert 0.39 <= rate <= 0.4


def test_image_noise_rate_near_ratio():
    perm = make_noise(6000, 5, 0.4, "image", seed=0)
    rate = realised_noise_rate(noisy_caption_to_image(perm, "image", 6000, 5), 5)
    assert perm.shape == (6000,)
    assert perm.dtype == np.int64
    assert 0.39 <= rate <= 0.4


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_zero_ratio_is_clean(convention):
    noise = make_noise(50, 5, 0.0, convention, seed=3)
    caption_to_image = noisy_caption_to_image(noise, convention, 50, 5)
    assert realised_noise_rate(caption_to_image, 5) == 0.0


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_seed_reproducible(convention):
    first = make_noise(100, 5, 0.5, convention, seed=7)
    again = make_noise(100, 5, 0.5, convention, seed=7)
    other = make_noise(100, 5, 0.5, convention, seed=8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_file_roundtrip(tmp_path, convention):
    noise = make_noise(200, 5, 0.3, convention, seed=1)
    path = tmp_path / f"{convention}.npy"
    save_noise(path, noise)
    loaded = load_noise(path, convention, 200, 5)
    assert np.load(path).dtype == np.int32
    assert loaded.dtype == np.int64
    assert np.array_equal(loaded, noisy_caption_to_image(noise, convention, 200, 5))


def test_save_keeps_int64_when_needed(tmp_path):
    path = tmp_path / "big.npy"
    save_noise(path, np.array([0, 2**40], dtype=np.int64))
    assert np.load(path).dtype == np.int64


def test_save_replaces_without_temp_files(tmp_path):
    path = tmp_path / "noise.npy"
    save_noise(path, np.array([1, 0]))
    save_noise(path, np.array([0, 1, 2]))
    assert [entry.name for entry in tmp_path.iterdir()] == ["noise.npy"]
    assert np.load(path).tolist() == [0, 1, 2]


def test_save_rejects_float(tmp_path):
    with pytest.raises(DataError, match="dtype float64"):
        save_noise(tmp_path / "noise.npy", np.array([0.0, 1.0]))


def test_per_caption_image_form_accepted():
    perm = make_noise(30, 5, 0.5, "image", seed=2)
    per_caption = np.repeat(perm, 5)
    from_perm = noisy_caption_to_image(perm, "image", 30, 5)
    from_per_caption = noisy_caption_to_image(per_caption, "image", 30, 5)
    assert np.array_equal(from_perm, from_per_caption)


def test_one_caption_per_image_both_conventions():
    perm = np.array([2, 0, 1, 3])
    as_caption = noisy_caption_to_image(perm, "caption", 4, 1)
    as_image = noisy_caption_to_image(perm, "image", 4, 1)
    assert np.array_equal(as_caption, perm)
    assert np.array_equal(as_image, perm)


def test_unsigned_input_accepted():
    perm = np.array([1, 0, 2], dtype=np.uint16)
    result = noisy_caption_to_image(perm, "image", 3, 2)
    assert result.tolist() == [1, 1, 0, 0, 2, 2]
    assert result.dtype == np.int64


@pytest.mark.skipif(not FLICKR8K_NOISE.is_file(), reason=f"shared Flickr8k noise file not found at {FLICKR8K_NOISE}")
def test_flickr8k_fixed_caption_noise():
    caption_to_image = load_noise(FLICKR8K_NOISE, "caption", 6000, 5)
    assert caption_to_image.shape == (30000,)
    assert realised_noise_rate(caption_to_image, 5) == pytest.approx(0.3999, abs=1e-4)
    # Shuffling among the chosen captions keeps five captions on every image.
    assert np.all(np.bincount(caption_to_image, minlength=6000) == 5)


@pytest.mark.skipif(not FLICKR8K_NOISE.is_file(), reason=f"shared Flickr8k noise file not found at {FLICKR8K_NOISE}")
def test_flickr8k_caption_noise_as_image_rejected():
    with pytest.raises(DataError, match="--noise-convention caption"):
        load_noise(FLICKR8K_NOISE, "image", 6000, 5)


def test_image_perm_as_caption_rejected(tmp_path):
    path = tmp_path / "perm.npy"
    save_noise(path, make_noise(6000, 5, 0.2, "image", seed=0))
    with pytest.raises(DataError, match="looks like an image permutation") as info:
        load_noise(path, "caption", 6000, 5)
    message = str(info.value)
    assert str(path) in message
    assert "(6000,)" in message
    assert "(30000,)" in message
    assert "'caption'" in message
    assert "--noise-convention image" in message


def test_caption_noise_as_image_rejected(tmp_path):
    path = tmp_path / "captions.npy"
    save_noise(path, make_noise(6000, 5, 0.2, "caption", seed=0))
    with pytest.raises(DataError, match="--noise-convention caption") as info:
        load_noise(path, "image", 6000, 5)
    message = str(info.value)
    assert str(path) in message
    assert "(6000,)" in message
    assert "(30000,)" in message
    assert "'image'" in message


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_wrong_length_rejected(convention):
    with pytest.raises(DataError, match=re.escape("shape (7,)")) as info:
        noisy_caption_to_image(np.zeros(7, dtype=np.int64), convention, 4, 5, source="noise.npy")
    assert "noise.npy" in str(info.value)
    assert "(20,)" in str(info.value)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("bad_value", [-1, 4])
def test_out_of_range_rejected(convention, bad_value):
    noise = np.array([0, 1, 2, bad_value])
    with pytest.raises(DataError, match=re.escape("[0, 4)")) as info:
        noisy_caption_to_image(noise, convention, 4, 1)
    assert f"contains {bad_value} at index 3" in str(info.value)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_float_dtype_rejected(convention):
    with pytest.raises(DataError, match="dtype float64"):
        noisy_caption_to_image(np.array([0.0, 1.0]), convention, 2, 1)


def test_two_dim_rejected():
    with pytest.raises(DataError, match=re.escape("shape (2, 5)")):
        noisy_caption_to_image(np.zeros((2, 5), dtype=np.int64), "caption", 2, 5)


def test_non_permutation_rejected():
    with pytest.raises(DataError, match="not a permutation") as info:
        noisy_caption_to_image(np.array([0, 0, 2]), "image", 3, 5)
    assert "image 0 appears 2 times" in str(info.value)


def test_per_caption_non_permutation_rejected():
    with pytest.raises(DataError, match="not a permutation"):
        noisy_caption_to_image(np.repeat([0, 0, 2], 5), "image", 3, 5)


def test_per_caption_mixed_group_rejected():
    noise = np.repeat([1, 0, 2], 2)
    noise[3] = 2
    with pytest.raises(DataError, match="captions 2..3 of image 1"):
        noisy_caption_to_image(noise, "image", 3, 2)


@pytest.mark.parametrize("ratio", ["0.4", None, True, 1.0, -0.1, 1.5, math.nan])
def test_invalid_ratio_rejected(ratio):
    with pytest.raises(ValueError, match="ratio"):
        make_noise(10, 5, ratio, "caption", seed=0)


def test_unknown_convention_rejected(tmp_path):
    path = tmp_path / "noise.npy"
    save_noise(path, np.arange(4))
    with pytest.raises(DataError, match="expected one of 'caption', 'image'"):
        make_noise(4, 1, 0.2, "L2RM", seed=0)
    with pytest.raises(DataError, match="'L2RM'"):
        noisy_caption_to_image(np.arange(4), "L2RM", 4, 1)
    with pytest.raises(DataError, match="'L2RM'"):
        load_noise(path, "L2RM", 4, 1)


def test_invalid_counts_rejected():
    with pytest.raises(ValueError, match="num_images"):
        make_noise(0, 5, 0.2, "caption", seed=0)
    with pytest.raises(TypeError, match="captions_per_image"):
        make_noise(10, 2.5, 0.2, "caption", seed=0)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_noise(tmp_path / "absent.npy", "caption", 4, 1)


def test_load_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        load_noise(tmp_path, "caption", 4, 1)


def test_load_npz_rejected(tmp_path):
    path = tmp_path / "noise.npz"
    np.savez(path, noise=np.arange(4))
    with pytest.raises(DataError, match="npz archive"):
        load_noise(path, "caption", 4, 1)


def test_load_garbage_rejected(tmp_path):
    path = tmp_path / "noise.npy"
    path.write_bytes(b"0,1,2,3\n")
    with pytest.raises(DataError, match="not a .npy file"):
        load_noise(path, "caption", 4, 1)


def test_rate_of_empty_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        realised_noise_rate(np.array([], dtype=np.int64), 5)


counts = st.integers(min_value=1, max_value=40)
captions_per_image = st.integers(min_value=1, max_value=5)
ratios = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@PROPERTY_SETTINGS
@given(num_images=counts, per_image=captions_per_image, ratio=ratios, seed=seeds)
def test_caption_noise_properties(num_images, per_image, ratio, seed):
    num_captions = num_images * per_image
    noise = make_noise(num_images, per_image, ratio, "caption", seed)
    clean = np.arange(num_captions) // per_image
    moved = np.count_nonzero(noise != clean)
    assert noise.shape == (num_captions,)
    assert noise.min() >= 0
    assert noise.max() < num_images
    assert moved <= round(ratio * num_captions)
    assert np.all(np.bincount(noise, minlength=num_images) == per_image)
    assert np.array_equal(noisy_caption_to_image(noise, "caption", num_images, per_image), noise)


@PROPERTY_SETTINGS
@given(num_images=counts, per_image=captions_per_image, ratio=ratios, seed=seeds)
def test_image_noise_properties(num_images, per_image, ratio, seed):
    perm = make_noise(num_images, per_image, ratio, "image", seed)
    caption_to_image = noisy_caption_to_image(perm, "image", num_images, per_image)
    moved_images = np.count_nonzero(perm != np.arange(num_images))
    assert np.array_equal(np.sort(perm), np.arange(num_images))
    assert moved_images <= round(ratio * num_images)
    assert np.array_equal(caption_to_image.reshape(num_images, per_image), np.repeat(perm[:, None], per_image, axis=1))
    assert realised_noise_rate(caption_to_image, per_image) == pytest.approx(moved_images / num_images)


@PROPERTY_SETTINGS
@given(
    convention=st.sampled_from(CONVENTIONS),
    num_images=counts,
    per_image=captions_per_image,
    ratio=ratios,
    seed=seeds,
)
def test_file_roundtrip_property(tmp_path_factory, convention, num_images, per_image, ratio, seed):
    noise = make_noise(num_images, per_image, ratio, convention, seed)
    path = tmp_path_factory.mktemp("noise") / "noise.npy"
    save_noise(path, noise)
    loaded = load_noise(path, convention, num_images, per_image)
    assert np.array_equal(loaded, noisy_caption_to_image(noise, convention, num_images, per_image))
