"""Property tests of the readers, the noise conventions and the recall computation.

They add to the round-trip and reference properties of ``tests/test_precomp.py``,
``tests/test_noise.py`` and ``tests/test_retrieval.py``. Damaged dataset, noise
and word-vector files raise DataError and nothing else. The two forms of
image-level noise agree, and invalid noise arrays are rejected. Recall does
not depend on the order or the scale of the embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from in2r_graph.data.errors import DataError
from in2r_graph.data.noise import load_noise, make_noise, noisy_caption_to_image, save_noise
from in2r_graph.data.precomp import load_split
from in2r_graph.data.word_vectors import read_word_vectors
from in2r_graph.evaluation.retrieval import METRIC_KEYS, retrieval_metrics

from .helpers import write_split

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

SPLIT_FILES = ("dev_ims.npy", "dev_caps.txt", "dev_caps_minilm.npy")


# ---- readers --------------------------------------------------------------------------------------


@st.composite
def corruptions(draw):
    """A file of a valid split and a change to its bytes: truncation, overwritten bytes or appended bytes."""
    name = draw(st.sampled_from(SPLIT_FILES))
    kind = draw(st.sampled_from(["truncate", "overwrite", "append"]))
    position = draw(st.floats(min_value=0.0, max_value=1.0))
    payload = draw(st.binary(min_size=1, max_size=16))
    return name, kind, position, payload


def _corrupt(path: Path, kind: str, position: float, payload: bytes) -> None:
    data = path.read_bytes()
    offset = min(int(position * len(data)), len(data) - 1)
    if kind == "truncate":
        data = data[:offset]
    elif kind == "overwrite":
        data = data[:offset] + payload + data[offset + len(payload) :]
    else:
        data = data + payload
    path.write_bytes(data)


@PROPERTY_SETTINGS
@given(change=corruptions())
def test_corrupted_split_raises_data_error_only(tmp_path_factory, change):
    root = tmp_path_factory.mktemp("corrupt")
    write_split(root, "dev", 4, per_image=2)
    name, kind, position, payload = change
    _corrupt(root / name, kind, position, payload)

    try:
        split = load_split(root, "dev", text_features="minilm")
    except DataError as error:
        assert str(root) in str(error)
        return
    assert split.num_captions == split.num_images * split.captions_per_image
    assert split.caption_embeddings.shape[0] == split.num_captions
    assert np.isfinite(np.asarray(split.images, dtype=np.float64)).all()


@PROPERTY_SETTINGS
@given(
    kind=st.sampled_from(["truncate", "overwrite", "append"]),
    position=st.floats(min_value=0.0, max_value=1.0),
    payload=st.binary(min_size=1, max_size=16),
)
def test_corrupted_thumbnails_raise_data_error_only(tmp_path_factory, kind, position, payload):
    root = tmp_path_factory.mktemp("thumbs")
    write_split(root, "dev", 3, per_image=1)
    (root / "dev_ims.npy").unlink()
    rng = np.random.default_rng(0)
    np.savez_compressed(root / "dev_thumbs.npz", images=rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8))
    _corrupt(root / "dev_thumbs.npz", kind, position, payload)

    try:
        split = load_split(root, "dev")
    except DataError as error:
        assert str(root) in str(error)
        return
    assert split.images.dtype == np.uint8
    assert split.images.shape[1:] == (4, 4, 3)


@PROPERTY_SETTINGS
@given(num_images=st.integers(min_value=2, max_value=6), count=st.integers(min_value=1, max_value=40))
def test_caption_count_not_multiple_rejected(tmp_path_factory, num_images, count):
    assume(count % num_images != 0)
    root = tmp_path_factory.mktemp("counts")
    write_split(root, "dev", num_images, per_image=1)
    (root / "dev_caps.txt").write_text("".join(f"caption {i}\n" for i in range(count)), encoding="utf-8")

    with pytest.raises(DataError, match=f"{count} captions for {num_images} images"):
        load_split(root, "dev")


# ---- noise conventions ----------------------------------------------------------------------------

counts = st.integers(min_value=1, max_value=30)
per_image_counts = st.integers(min_value=1, max_value=5)


@PROPERTY_SETTINGS
@given(num_images=counts, per_image=per_image_counts, seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_image_noise_forms_agree(num_images, per_image, seed):
    perm = np.random.default_rng(seed).permutation(num_images)

    per_image_form = noisy_caption_to_image(perm, "image", num_images, per_image)
    per_caption_form = noisy_caption_to_image(np.repeat(perm, per_image), "image", num_images, per_image)

    assert np.array_equal(per_image_form, per_caption_form)


@PROPERTY_SETTINGS
@given(
    convention=st.sampled_from(["caption", "image"]),
    num_images=counts,
    per_image=per_image_counts,
    length=st.integers(min_value=1, max_value=200),
)
def test_noise_of_wrong_length_rejected(convention, num_images, per_image, length):
    valid = {num_images * per_image} | ({num_images} if convention == "image" else set())
    if length in valid:
        return
    noise = np.zeros(length, dtype=np.int64)

    with pytest.raises(DataError, match=f"shape \\({length},\\)"):
        noisy_caption_to_image(noise, convention, num_images, per_image)


@PROPERTY_SETTINGS
@given(
    convention=st.sampled_from(["caption", "image"]),
    num_images=counts,
    per_image=per_image_counts,
    ratio=st.floats(min_value=0.0, max_value=0.99),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
)
def test_float_noise_rejected(convention, num_images, per_image, ratio, seed, dtype):
    noise = make_noise(num_images, per_image, ratio, convention, seed).astype(dtype)

    with pytest.raises(DataError, match=f"dtype {np.dtype(dtype)}"):
        noisy_caption_to_image(noise, convention, num_images, per_image)


@PROPERTY_SETTINGS
@given(
    convention=st.sampled_from(["caption", "image"]),
    num_images=counts,
    per_image=per_image_counts,
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    data=st.data(),
)
def test_noise_out_of_range_rejected(convention, num_images, per_image, seed, data):
    noise = make_noise(num_images, per_image, 0.5, convention, seed)
    index = data.draw(st.integers(min_value=0, max_value=noise.size - 1))
    noise[index] = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=num_images)).filter(
        lambda value: -(2**62) < value < 2**62
    ))

    with pytest.raises(DataError, match=f"expected image indices in \\[0, {num_images}\\)"):
        noisy_caption_to_image(noise, convention, num_images, per_image)


# ---- recall ---------------------------------------------------------------------------------------


@st.composite
def retrieval_cases(draw):
    num_images = draw(st.integers(min_value=1, max_value=10))
    per_image = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=num_images, max_size=num_images))
    dim = draw(st.integers(min_value=1, max_value=5))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    mapping = np.repeat(np.arange(num_images), per_image)
    images = torch.randn(num_images, dim, generator=generator, dtype=torch.float64)
    texts = torch.randn(mapping.size, dim, generator=generator, dtype=torch.float64)
    return images, texts, mapping, seed


def _assert_same_metrics(actual: dict[str, float], expected: dict[str, float]) -> None:
    for key in METRIC_KEYS:
        assert actual[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-9), key


@PROPERTY_SETTINGS
@given(case=retrieval_cases())
def test_recall_ignores_order(case):
    images, texts, mapping, seed = case
    rng = np.random.default_rng(seed)
    image_order = rng.permutation(images.shape[0])  # new position -> old image
    caption_order = rng.permutation(texts.shape[0])
    new_index = np.argsort(image_order)  # old image -> new position

    reordered = retrieval_metrics(
        images[torch.from_numpy(image_order)], texts[torch.from_numpy(caption_order)], new_index[mapping[caption_order]]
    )

    _assert_same_metrics(reordered, retrieval_metrics(images, texts, mapping))


@PROPERTY_SETTINGS
@given(case=retrieval_cases(), exponent=st.integers(min_value=-4, max_value=4))
def test_recall_ignores_scale(case, exponent):
    images, texts, mapping, _ = case
    scale = 2.0**exponent  # a power of two keeps every product exact

    _assert_same_metrics(
        retrieval_metrics(images * scale, texts, mapping), retrieval_metrics(images, texts, mapping)
    )


# ---- other readers --------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(change=corruptions().map(lambda change: change[1:]), convention=st.sampled_from(["caption", "image"]))
def test_corrupted_noise_file_raises_data_error_only(tmp_path_factory, change, convention):
    path = tmp_path_factory.mktemp("noise") / "noise.npy"
    save_noise(path, make_noise(6, 2, 0.5, convention, seed=0))
    _corrupt(path, *change)

    try:
        mapping = load_noise(path, convention, 6, 2)
    except DataError as error:
        assert str(path) in str(error)
        return
    assert mapping.shape == (12,)


vector_lines = st.lists(
    st.tuples(st.sampled_from(["image", "caption", "other"]), st.lists(st.text(max_size=6), max_size=5)),
    max_size=6,
)


@PROPERTY_SETTINGS
@given(lines=vector_lines, raw=st.binary(max_size=12))
def test_word_vectors_raise_data_error_only(tmp_path_factory, lines, raw):
    path = tmp_path_factory.mktemp("vectors") / "vectors.txt"
    text = "\n".join(" ".join([word, *values]) for word, values in lines)
    path.write_bytes(text.encode("utf-8", errors="surrogatepass") + raw)

    try:
        vectors, found = read_word_vectors(path, ["<pad>", "<unk>", "image", "caption"], 3)
    except DataError as error:
        assert str(path) in str(error)
        return
    assert vectors.shape == (4, 3)
    assert found.any()
    assert np.isfinite(vectors).all()
