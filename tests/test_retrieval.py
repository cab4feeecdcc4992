"""Tests for the retrieval metrics against a per-query reference loop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from in2r_graph.evaluation.retrieval import (
    METRIC_KEYS,
    RECALL_KS,
    five_fold_metrics,
    format_metrics_table,
    retrieval_metrics,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR8K = SHARED_DATA / "flickr8k_precomp"


def reference_metrics(similarity: np.ndarray, caption_to_image: np.ndarray) -> dict[str, float]:
    """Score a full similarity matrix with one Python loop iteration per query.

    Each row or column is sorted in descending order, and the rank of a ground
    truth is 1 plus the position of the first entry equal to its similarity,
    which is 1 plus the number of strictly higher entries.
    """
    num_images, num_captions = similarity.shape

    i2t_ranks = []
    for image in range(num_images):
        ordered = np.sort(similarity[image])[::-1]
        best = math.inf
        for caption in np.flatnonzero(caption_to_image == image):
            position = int(np.flatnonzero(ordered == similarity[image, caption])[0])
            best = min(best, position + 1)
        i2t_ranks.append(best)

    t2i_ranks = []
    for caption in range(num_captions):
        ordered = np.sort(similarity[:, caption])[::-1]
        own = similarity[caption_to_image[caption], caption]
        t2i_ranks.append(int(np.flatnonzero(ordered == own)[0]) + 1)

    metrics = {}
    for direction, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        for k in RECALL_KS:
            metrics[f"{direction}_r{k}"] = 100.0 * sum(rank <= k for rank in ranks) / len(ranks)
    metrics["rsum"] = sum(metrics[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_KS)
    for direction, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        metrics[f"{direction}_medr"] = float(math.floor(np.median(ranks)))
        metrics[f"{direction}_meanr"] = float(np.mean(ranks))
    return metrics


def random_embeddings(
    num_images: int, num_captions: int, dim: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_images, dim, generator=generator, dtype=torch.float64)
    texts = torch.randn(num_captions, dim, generator=generator, dtype=torch.float64)
    return images, texts


def correlated_embeddings(
    caption_to_image: np.ndarray, dim: int, seed: int, noise: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions near their image, so that recalls land strictly between 0 and 100."""
    generator = torch.Generator().manual_seed(seed)
    num_images = int(caption_to_image.max()) + 1
    images = torch.randn(num_images, dim, generator=generator, dtype=torch.float64)
    owner = torch.from_numpy(caption_to_image).long()
    offsets = torch.randn(len(caption_to_image), dim, generator=generator, dtype=torch.float64)
    texts = images[owner] + noise * offsets
    return images, texts


def shuffled_mapping(captions_per_image: list[int], seed: int) -> np.ndarray:
    mapping = np.repeat(np.arange(len(captions_per_image)), captions_per_image)
    return np.random.default_rng(seed).permutation(mapping)


def assert_metrics_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert list(actual) == list(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert actual[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-9), key


@pytest.mark.parametrize("captions_per_image", [1, 2, 5])
def test_matches_reference_loop(captions_per_image):
    num_images = 40
    mapping = shuffled_mapping([captions_per_image] * num_images, seed=captions_per_image)
    images, texts = correlated_embeddings(mapping, dim=8, seed=captions_per_image)

    expected = reference_metrics((images @ texts.T).numpy(), mapping)
    actual = retrieval_metrics(images, texts, mapping, shard_size=9)

    assert 0.0 < actual["i2t_r1"] < 100.0
    assert 0.0 < actual["t2i_r1"] < 100.0
    assert_metrics_close(actual, expected)


def test_matches_reference_uneven_mapping():
    captions_per_image = [1, 3, 2, 7, 1, 1, 4, 2, 5, 1, 2, 3, 6, 1, 2, 2, 1, 3, 1, 4]
    mapping = shuffled_mapping(captions_per_image, seed=3)
    images, texts = correlated_embeddings(mapping, dim=6, seed=3)

    expected = reference_metrics((images @ texts.T).numpy(), mapping)
    actual = retrieval_metrics(images, texts, torch.from_numpy(mapping), shard_size=4)

    assert_metrics_close(actual, expected)


def test_matches_reference_random():
    mapping = shuffled_mapping([5] * 30, seed=11)
    images, texts = random_embeddings(30, 150, dim=4, seed=11)

    expected = reference_metrics((images @ texts.T).numpy(), mapping)
    actual = retrieval_metrics(images, texts, mapping)

    assert_metrics_close(actual, expected)


def test_float32_matches_reference():
    mapping = shuffled_mapping([5] * 25, seed=5)
    images, texts = correlated_embeddings(mapping, dim=16, seed=5)
    images, texts = images.float(), texts.float()

    expected = reference_metrics((images.double() @ texts.double().T).numpy(), mapping)
    actual = retrieval_metrics(images, texts, mapping, shard_size=6)

    assert_metrics_close(actual, expected)


@pytest.mark.parametrize("shard_size", [1, 7, 33])
def test_sharded_equals_unsharded(shard_size):
    mapping = shuffled_mapping([1, 2, 5, 3] * 8 + [2], seed=7)
    images, texts = correlated_embeddings(mapping, dim=8, seed=7)
    num_images = images.shape[0]
    assert num_images == 33

    unsharded = retrieval_metrics(images, texts, mapping, shard_size=num_images)
    sharded = retrieval_metrics(images, texts, mapping, shard_size=shard_size)

    assert_metrics_close(sharded, unsharded)


def test_shard_larger_than_images():
    mapping = shuffled_mapping([2] * 10, seed=8)
    images, texts = correlated_embeddings(mapping, dim=4, seed=8)

    small = retrieval_metrics(images, texts, mapping, shard_size=10)
    large = retrieval_metrics(images, texts, mapping, shard_size=10_000)

    assert_metrics_close(large, small)


def test_ensemble_equals_mean_similarity():
    mapping = shuffled_mapping([5] * 20, seed=9)
    images_a, texts_a = correlated_embeddings(mapping, dim=8, seed=9, noise=2.0)
    images_b, texts_b = correlated_embeddings(mapping, dim=12, seed=10, noise=2.0)

    mean_similarity = (images_a @ texts_a.T + images_b @ texts_b.T) / 2
    expected = reference_metrics(mean_similarity.numpy(), mapping)
    actual = retrieval_metrics([images_a, images_b], [texts_a, texts_b], mapping, shard_size=6)

    assert_metrics_close(actual, expected)


def test_ensemble_differs_from_each_network():
    mapping = shuffled_mapping([5] * 20, seed=9)
    images_a, texts_a = correlated_embeddings(mapping, dim=8, seed=9, noise=2.0)
    images_b, texts_b = correlated_embeddings(mapping, dim=12, seed=10, noise=2.0)

    ensemble = retrieval_metrics([images_a, images_b], [texts_a, texts_b], mapping)
    single_a = retrieval_metrics(images_a, texts_a, mapping)
    single_b = retrieval_metrics(images_b, texts_b, mapping)

    assert ensemble["rsum"] != single_a["rsum"]
    assert ensemble["rsum"] != single_b["rsum"]


def test_single_tensor_equals_one_network_list():
    mapping = shuffled_mapping([3] * 12, seed=12)
    images, texts = correlated_embeddings(mapping, dim=5, seed=12)

    assert_metrics_close(retrieval_metrics([images], [texts], mapping), retrieval_metrics(images, texts, mapping))


@pytest.mark.parametrize("captions_per_image", [1, 5])
def test_perfect_embeddings(captions_per_image):
    num_images = 12
    mapping = shuffled_mapping([captions_per_image] * num_images, seed=1)
    images = torch.eye(num_images)
    texts = images[torch.from_numpy(mapping)]

    metrics = retrieval_metrics(images, texts, mapping, shard_size=5)

    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert metrics[key] == 100.0, key
    assert metrics["rsum"] == 600.0
    assert metrics["i2t_medr"] == 1.0
    assert metrics["t2i_medr"] == 1.0
    assert metrics["i2t_meanr"] == 1.0
    assert metrics["t2i_meanr"] == 1.0


def test_tie_does_not_lower_rank():
    # Caption 0 belongs to image 0, and caption 1 (of image 1) ties with it for image 0.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mapping = np.array([0, 1, 1])

    metrics = retrieval_metrics(images, texts, mapping)

    assert metrics["i2t_r1"] == 100.0
    # Caption 1 ([1, 0]) prefers image 0 over its own image 1, so its rank is 2.
    assert metrics["t2i_r1"] == pytest.approx(200.0 / 3)
    assert metrics["t2i_meanr"] == pytest.approx(4.0 / 3)


def test_image_ranked_by_best_caption():
    # Image 0 owns captions 0 and 2, which rank 2nd and 3rd behind caption 1, so its rank is 2.
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    texts = torch.tensor([[0.5, 0.0, 0.0], [0.9, 0.5, 0.0], [0.1, 0.0, 0.0]])
    mapping = np.array([0, 1, 0])

    metrics = retrieval_metrics(images, texts, mapping)

    assert metrics["i2t_r1"] == 50.0
    assert metrics["i2t_meanr"] == 1.5
    assert metrics["i2t_medr"] == 1.0


def test_median_rounds_down():
    # Image ranks are 1 and 2 (median 1.5), reported as 1.
    images = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mapping = np.array([0, 1])

    metrics = retrieval_metrics(images, texts, mapping)

    assert metrics["i2t_medr"] == 1.0
    assert metrics["i2t_meanr"] == 1.5


def test_half_precision_upcast():
    mapping = shuffled_mapping([2] * 15, seed=13)
    images, texts = correlated_embeddings(mapping, dim=8, seed=13)
    images, texts = images.half(), texts.half()

    expected = reference_metrics((images.float() @ texts.float().T).double().numpy(), mapping)
    actual = retrieval_metrics(images, texts, mapping, shard_size=4)

    assert_metrics_close(actual, expected)


def make_five_fold_data(fold_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    captions_per_image = rng.integers(1, 4, size=5 * fold_size).tolist()
    mapping = shuffled_mapping(captions_per_image, seed=seed)
    images, texts = correlated_embeddings(mapping, dim=6, seed=seed, noise=1.5)
    return images, texts, mapping


def test_five_fold_equals_mean_of_folds():
    fold_size = 8
    images, texts, mapping = make_five_fold_data(fold_size, seed=21)

    per_fold = []
    for fold in range(5):
        start, stop = fold * fold_size, (fold + 1) * fold_size
        captions = np.flatnonzero((mapping >= start) & (mapping < stop))
        per_fold.append(retrieval_metrics(images[start:stop], texts[captions], mapping[captions] - start))
    expected = {key: float(np.mean([metrics[key] for metrics in per_fold])) for key in METRIC_KEYS}

    actual = five_fold_metrics(images, texts, mapping, fold_size=fold_size, shard_size=3)

    assert_metrics_close(actual, expected)


def test_five_fold_differs_from_full_set():
    fold_size = 8
    images, texts, mapping = make_five_fold_data(fold_size, seed=22)

    five_fold = five_fold_metrics(images, texts, mapping, fold_size=fold_size)
    full = retrieval_metrics(images, texts, mapping)

    assert five_fold["rsum"] > full["rsum"]


def test_five_fold_ensemble():
    fold_size = 6
    images_a, texts_a, mapping = make_five_fold_data(fold_size, seed=23)
    generator = torch.Generator().manual_seed(0)
    images_b = images_a + 0.5 * torch.randn(images_a.shape, dtype=torch.float64, generator=generator)

    per_fold = []
    for fold in range(5):
        start, stop = fold * fold_size, (fold + 1) * fold_size
        captions = np.flatnonzero((mapping >= start) & (mapping < stop))
        per_fold.append(
            retrieval_metrics(
                [images_a[start:stop], images_b[start:stop]],
                [texts_a[captions], texts_a[captions]],
                mapping[captions] - start,
            )
        )
    expected = {key: float(np.mean([metrics[key] for metrics in per_fold])) for key in METRIC_KEYS}

    actual = five_fold_metrics([images_a, images_b], [texts_a, texts_a], mapping, fold_size=fold_size)

    assert_metrics_close(actual, expected)


def test_five_fold_wrong_size_raises():
    images, texts, mapping = make_five_fold_data(fold_size=8, seed=24)

    with pytest.raises(ValueError, match=r"requires exactly 5 \* fold_size = 50 images.*got 40"):
        five_fold_metrics(images, texts, mapping, fold_size=10)


def test_five_fold_bad_fold_size_raises():
    images, texts, mapping = make_five_fold_data(fold_size=8, seed=24)

    with pytest.raises(ValueError, match="fold_size must be a positive integer, got 0"):
        five_fold_metrics(images, texts, mapping, fold_size=0)


def test_image_without_caption_raises():
    images = torch.randn(4, 3)
    texts = torch.randn(5, 3)
    mapping = np.array([0, 0, 1, 3, 3])

    with pytest.raises(ValueError, match=r"1 of 4 images own no caption.*\[2\]"):
        retrieval_metrics(images, texts, mapping)


def test_index_out_of_range_raises():
    images = torch.randn(3, 3)
    texts = torch.randn(3, 3)

    with pytest.raises(ValueError, match=r"indices from 0 to 3; expected indices in \[0, 2\]"):
        retrieval_metrics(images, texts, np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="indices from -1 to 2"):
        retrieval_metrics(images, texts, np.array([-1, 1, 2]))


def test_mapping_length_mismatch_raises():
    with pytest.raises(ValueError, match=r"caption_to_image must have shape \(4,\)"):
        retrieval_metrics(torch.randn(2, 3), torch.randn(4, 3), np.array([0, 1, 1]))


def test_float_mapping_raises():
    with pytest.raises(TypeError, match="caption_to_image must have an integer dtype"):
        retrieval_metrics(torch.randn(2, 3), torch.randn(2, 3), np.array([0.0, 1.0]))


def test_dim_mismatch_raises():
    with pytest.raises(ValueError, match="image embeddings have dim 3 but text embeddings have dim 4"):
        retrieval_metrics(torch.randn(2, 3), torch.randn(2, 4), np.array([0, 1]))


def test_network_count_mismatch_raises():
    images = torch.randn(2, 3)
    with pytest.raises(ValueError, match="image_embeddings has 2 network"):
        retrieval_metrics([images, images], [torch.randn(2, 3)], np.array([0, 1]))


def test_network_row_mismatch_raises():
    with pytest.raises(ValueError, match=r"image_embeddings\[1\] has 3 rows"):
        retrieval_metrics(
            [torch.randn(2, 3), torch.randn(3, 3)], [torch.randn(2, 3), torch.randn(2, 3)], np.array([0, 1])
        )


def test_non_finite_raises():
    texts = torch.randn(2, 3)
    texts[1, 0] = float("nan")
    with pytest.raises(ValueError, match="text_embeddings contains NaN"):
        retrieval_metrics(torch.randn(2, 3), texts, np.array([0, 1]))


def test_integer_embeddings_raise():
    with pytest.raises(TypeError, match="image_embeddings must have a floating dtype"):
        retrieval_metrics(torch.ones(2, 3, dtype=torch.long), torch.randn(2, 3), np.array([0, 1]))


def test_numpy_embeddings_raise():
    with pytest.raises(TypeError, match="image_embeddings must be a Tensor or a sequence"):
        retrieval_metrics(np.ones((2, 3)), torch.randn(2, 3), np.array([0, 1]))


@pytest.mark.parametrize("shard_size", [0, -3])
def test_bad_shard_size_raises(shard_size):
    with pytest.raises(ValueError, match=f"shard_size must be a positive integer, got {shard_size}"):
        retrieval_metrics(torch.randn(2, 3), torch.randn(2, 3), np.array([0, 1]), shard_size=shard_size)


def test_format_table_rows():
    metrics = retrieval_metrics(torch.eye(3), torch.eye(3), np.array([0, 1, 2]))
    partial = {key: 12.345 for key in METRIC_KEYS}

    table = format_metrics_table({"perfect": metrics, "network_a": partial})
    lines = table.splitlines()

    assert len(lines) == 3
    titles = ["i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5", "t2i R@10", "rSum"]
    assert lines[0].split() == ["name"] + " ".join(titles).split()
    assert lines[1].split() == ["perfect"] + ["100.0"] * 6 + ["600.0"]
    assert lines[2].split() == ["network_a"] + ["12.3"] * 7
    assert len({len(line) for line in lines}) == 1


def test_format_table_empty():
    assert format_metrics_table({}).splitlines()[0].startswith("name")


def test_format_table_missing_key_raises():
    with pytest.raises(ValueError, match="rows\\['broken'\\] is missing the metric 'rsum'"):
        format_metrics_table({"broken": {key: 1.0 for key in METRIC_KEYS if key != "rsum"}})


@st.composite
def retrieval_problems(draw):
    captions_per_image = draw(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=12))
    dim = draw(st.integers(min_value=1, max_value=6))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    shard_size = draw(st.integers(min_value=1, max_value=16))
    mapping = shuffled_mapping(captions_per_image, seed=seed)
    images, texts = random_embeddings(len(captions_per_image), len(mapping), dim, seed)
    return images, texts, mapping, shard_size


@settings(max_examples=30, deadline=None)
@given(retrieval_problems())
def test_recall_properties(problem):
    images, texts, mapping, shard_size = problem

    metrics = retrieval_metrics(images, texts, mapping, shard_size=shard_size)

    for direction in ("i2t", "t2i"):
        recalls = [metrics[f"{direction}_r{k}"] for k in RECALL_KS]
        assert all(0.0 <= recall <= 100.0 for recall in recalls)
        assert recalls == sorted(recalls)
        assert metrics[f"{direction}_medr"] >= 1.0
        assert metrics[f"{direction}_meanr"] >= 1.0
    assert metrics["rsum"] == pytest.approx(sum(metrics[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_KS))


@settings(max_examples=30, deadline=None)
@given(retrieval_problems())
def test_random_matches_reference(problem):
    images, texts, mapping, shard_size = problem

    expected = reference_metrics((images @ texts.T).numpy(), mapping)
    actual = retrieval_metrics(images, texts, mapping, shard_size=shard_size)

    assert_metrics_close(actual, expected)


@pytest.mark.shared_data
@pytest.mark.skipif(not FLICKR8K.is_dir(), reason=f"Flickr8k test data not found at {FLICKR8K}")
def test_flickr8k_captions_match_reference():
    # Real caption embeddings. Each image is represented by the mean of its five captions.
    captions = np.load(FLICKR8K / "test_caps_minilm.npy").astype(np.float64)[:1000]  # (200 * 5, 384)
    mapping = np.repeat(np.arange(200), 5)
    texts = torch.from_numpy(captions)
    images = texts.reshape(200, 5, -1).mean(dim=1)  # (200, 384)

    expected = reference_metrics((images @ texts.T).numpy(), mapping)
    actual = retrieval_metrics(images, texts, mapping, shard_size=64)

    assert actual["i2t_r1"] > 90.0
    assert_metrics_close(actual, expected)
