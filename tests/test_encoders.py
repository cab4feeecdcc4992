"""Tests of the image and text encoders, GPO and the encoder factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from in2r_graph.encoders.factory import IMAGE_ENCODERS, TEXT_ENCODERS, build_image_encoder, build_text_encoder
from in2r_graph.encoders.gpo import GPO, weighted_rank_pool
from in2r_graph.encoders.image import (
    GlobalImageEncoder,
    RegionImageEncoder,
    ThumbnailCNN,
    augment_thumbnails,
)
from in2r_graph.encoders.layers import compact_kept, ensure_one_kept
from in2r_graph.encoders.text import EmbeddingTextEncoder, GRUTextEncoder, augment_tokens

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR8K = SHARED_DATA / "flickr8k_precomp"

EMBED_DIM = 16
FEATURE_DIM = 12
VOCAB_SIZE = 30
BATCH = 6
LENGTHS = [5, 3, 1, 5, 2, 4]


def region_inputs(dtype=torch.float32):
    features = torch.randn(BATCH, max(LENGTHS), FEATURE_DIM).to(dtype)
    return features, torch.tensor(LENGTHS)


def token_inputs():
    lengths = torch.tensor(LENGTHS)
    tokens = torch.randint(2, VOCAB_SIZE, (BATCH, max(LENGTHS)))
    tokens = tokens.masked_fill(torch.arange(max(LENGTHS)) >= lengths.unsqueeze(1), 0)
    return ({"tokens": tokens, "lengths": lengths},)


# name -> (constructor, inputs for a float dtype). The GRU encoder takes ids,
# so it ignores the dtype.
CASES = {
    "global": (
        lambda: GlobalImageEncoder(FEATURE_DIM, EMBED_DIM),
        lambda dtype: (torch.randn(BATCH, FEATURE_DIM).to(dtype),),
    ),
    "region": (
        lambda: RegionImageEncoder(FEATURE_DIM, EMBED_DIM),
        region_inputs,
    ),
    "region_batchnorm": (
        lambda: RegionImageEncoder(FEATURE_DIM, EMBED_DIM, norm="batch"),
        region_inputs,
    ),
    "thumbnail": (
        lambda: ThumbnailCNN(EMBED_DIM, channels=(4, 8, 8, 8)),
        lambda dtype: (torch.randint(0, 256, (BATCH, 16, 16, 3), dtype=torch.uint8),),
    ),
    "thumbnail_float": (
        lambda: ThumbnailCNN(EMBED_DIM, channels=(4, 8), downsample="maxpool"),
        lambda dtype: (torch.rand(BATCH, 16, 16, 3).to(dtype),),
    ),
    "embedding": (
        lambda: EmbeddingTextEncoder(FEATURE_DIM, EMBED_DIM),
        lambda dtype: (torch.randn(BATCH, FEATURE_DIM).to(dtype),),
    ),
    "gru": (
        lambda: GRUTextEncoder(VOCAB_SIZE, EMBED_DIM, word_dim=8),
        lambda dtype: token_inputs(),
    ),
    "gru_two_layers": (
        lambda: GRUTextEncoder(VOCAB_SIZE, EMBED_DIM, word_dim=8, num_layers=2, norm="batch"),
        lambda dtype: token_inputs(),
    ),
}
FLOAT_CASES = [name for name in CASES if not name.startswith("gru") and name != "thumbnail"]


def make_case(name, dtype=torch.float32):
    torch.manual_seed(0)
    constructor, make_inputs = CASES[name]
    return constructor(), make_inputs(dtype)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("training", [True, False])
def test_output_shape_norm_finite(name, training):
    encoder, inputs = make_case(name)
    encoder.train(training)
    out = encoder(*inputs)
    assert out.shape == (BATCH, EMBED_DIM)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=1), torch.ones(BATCH), atol=1e-5)


@pytest.mark.parametrize("name", FLOAT_CASES)
def test_float16_input_gives_float32(name):
    encoder, inputs = make_case(name, dtype=torch.float16)
    out = encoder.eval()(*inputs)
    assert inputs[0].dtype == torch.float16
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", CASES)
def test_eval_is_deterministic(name):
    encoder, inputs = make_case(name)
    encoder.eval()
    with torch.no_grad():
        first = encoder(*inputs)
        second = encoder(*inputs)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", CASES)
def test_train_views_differ(name):
    encoder, inputs = make_case(name)
    encoder.train()
    first = encoder(*inputs)
    second = encoder(*inputs)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("name", CASES)
def test_gradients_reach_every_parameter(name):
    encoder, inputs = make_case(name)
    encoder.train()
    direction = torch.randn(BATCH, EMBED_DIM)
    (encoder(*inputs) * direction).sum().backward()
    for param_name, param in encoder.named_parameters():
        assert param.grad is not None, f"{param_name} received no gradient"
        assert param.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_region_padding_invariance(norm):
    torch.manual_seed(0)
    encoder = RegionImageEncoder(FEATURE_DIM, EMBED_DIM, norm=norm).eval()
    features, lengths = region_inputs()
    padded = torch.cat([features, torch.zeros(BATCH, 4, FEATURE_DIM)], dim=1)
    # Large values in padding slots must be ignored like zeros would be.
    padded[torch.arange(padded.shape[1]) >= lengths.unsqueeze(1)] = 1e3
    with torch.no_grad():
        expected = encoder(features, lengths)
        actual = encoder(padded, lengths)
    assert torch.allclose(actual, expected, atol=1e-5)


def test_region_default_lengths_mean_all():
    torch.manual_seed(0)
    encoder = RegionImageEncoder(FEATURE_DIM, EMBED_DIM).eval()
    features = torch.randn(BATCH, 4, FEATURE_DIM)
    full = torch.full((BATCH,), 4)
    with torch.no_grad():
        assert torch.allclose(encoder(features), encoder(features, full), atol=1e-6)


def test_region_high_drop_keeps_a_region():
    torch.manual_seed(0)
    encoder = RegionImageEncoder(FEATURE_DIM, EMBED_DIM, region_drop=0.99).train()
    features, lengths = region_inputs()
    out = encoder(features, lengths)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=1), torch.ones(BATCH), atol=1e-5)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_gru_padding_invariance(norm):
    torch.manual_seed(0)
    encoder = GRUTextEncoder(VOCAB_SIZE, EMBED_DIM, word_dim=8, norm=norm).eval()
    (captions,) = token_inputs()
    padded = dict(captions)
    padded["tokens"] = torch.cat([captions["tokens"], torch.zeros(BATCH, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        expected = encoder(captions)
        actual = encoder(padded)
    assert torch.allclose(actual, expected, atol=1e-5)


def test_gru_load_word_vectors():
    encoder = GRUTextEncoder(VOCAB_SIZE, EMBED_DIM, word_dim=8)
    vectors = torch.randn(VOCAB_SIZE, 8)
    encoder.load_word_vectors(vectors)
    assert torch.equal(encoder.word_embedding.weight[1:], vectors[1:])
    assert torch.equal(encoder.word_embedding.weight[0], torch.zeros(8))
    with pytest.raises(ValueError, match=r"\(30, 8\)"):
        encoder.load_word_vectors(torch.randn(VOCAB_SIZE, 9))


def test_gru_rejects_bad_tokens():
    encoder = GRUTextEncoder(VOCAB_SIZE, EMBED_DIM, word_dim=8)
    (captions,) = token_inputs()
    out_of_range = dict(captions, tokens=captions["tokens"].masked_fill(captions["tokens"] > 0, VOCAB_SIZE))
    with pytest.raises(ValueError, match="ids in"):
        encoder(out_of_range)
    zero_length = dict(captions, lengths=captions["lengths"] * 0)
    with pytest.raises(ValueError, match="lengths"):
        encoder(zero_length)
    with pytest.raises(TypeError, match="tokens"):
        encoder(captions["tokens"])


def test_feature_dim_checked():
    encoder = GlobalImageEncoder(FEATURE_DIM, EMBED_DIM)
    with pytest.raises(ValueError, match="input_dim"):
        encoder(torch.randn(BATCH, FEATURE_DIM + 1))
    with pytest.raises(TypeError, match="floating"):
        encoder(torch.ones(BATCH, FEATURE_DIM, dtype=torch.long))


def test_thumbnail_rejects_channels_first():
    encoder = ThumbnailCNN(EMBED_DIM, channels=(4,))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        encoder(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_augment_tokens_equal_shares():
    torch.manual_seed(0)
    word, vocab_size, prob = 5, 1000, 0.3
    tokens = torch.full((2000, 20), word)
    lengths = torch.full((2000,), 20)
    augmented, new_lengths = augment_tokens(tokens, lengths, prob, vocab_size)
    total = tokens.numel()
    removed = (lengths - new_lengths).sum().item() / total
    masked = (augmented == 1).sum().item() / total
    replaced = ((augmented != word) & (augmented > 1)).sum().item() / total
    assert abs(removed - prob / 3) < 0.01
    assert abs(masked - prob / 3) < 0.01
    assert abs(replaced - prob / 3) < 0.01


def test_augment_tokens_keeps_padding_valid():
    torch.manual_seed(0)
    (captions,) = token_inputs()
    tokens, lengths = augment_tokens(captions["tokens"], captions["lengths"], 0.99, VOCAB_SIZE)
    beyond = torch.arange(tokens.shape[1]) >= lengths.unsqueeze(1)
    assert (lengths >= 1).all()
    assert (lengths <= captions["lengths"]).all()
    assert (tokens[beyond] == 0).all()
    assert (tokens[~beyond] >= 1).all()
    assert (tokens < VOCAB_SIZE).all()


def test_augment_tokens_zero_prob_is_identity():
    (captions,) = token_inputs()
    tokens, lengths = augment_tokens(captions["tokens"], captions["lengths"], 0.0, VOCAB_SIZE)
    assert torch.equal(tokens, captions["tokens"])
    assert torch.equal(lengths, captions["lengths"])


def test_compact_kept_keeps_order():
    x = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    keep = torch.tensor([[False, True, False, True], [True, False, False, False]])
    compacted, lengths = compact_kept(x, keep)
    assert lengths.tolist() == [2, 1]
    assert compacted[0].tolist() == [11, 13]
    assert compacted[1, 0].item() == 20


def test_ensure_one_kept_picks_valid():
    torch.manual_seed(0)
    valid = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    keep = torch.tensor([[False, False, False], [False, False, False], [True, False, True]])
    result = ensure_one_kept(keep, valid)
    assert result[:2].sum(dim=1).tolist() == [1, 1]
    assert not (result & ~valid).any()
    assert torch.equal(result[2], keep[2])


def test_thumbnail_augment_zero_is_identity():
    images = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    assert torch.equal(augment_thumbnails(images, max_shift=0, flip=False), images)


def test_thumbnail_augment_flip_and_shift():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8)
    augmented = augment_thumbnails(images, max_shift=2)
    rows = torch.arange(8)
    for image, result in zip(images, augmented):
        candidates = []
        for source in (image, image.flip(1)):
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    shifted_rows = (rows + dy).clamp(0, 7)
                    shifted_cols = (rows + dx).clamp(0, 7)
                    candidates.append(source[shifted_rows][:, shifted_cols])
        assert any(torch.equal(result, c) for c in candidates)


def test_gpo_uniform_weights_give_mean():
    torch.manual_seed(0)
    gpo = GPO()
    torch.nn.init.zeros_(gpo.scorer.weight)
    features = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 3])
    pooled = gpo(features, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(pooled[b], features[b, :n].mean(dim=0), atol=1e-6)


def test_gpo_top_rank_weights():
    features = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 3])
    # Padding entries larger than every valid one must not win a rank.
    features[1, 2:] = 100.0
    features[2, 3:] = 100.0
    top_one = torch.zeros(3, 5)
    top_one[:, 0] = 1.0
    top_two = torch.zeros(3, 5)
    top_two[:, :2] = 0.5
    max_pooled = weighted_rank_pool(features, lengths, top_one)
    top_two_mean = weighted_rank_pool(features, lengths, top_two)
    for b, n in enumerate(lengths.tolist()):
        ranked = features[b, :n].sort(dim=0, descending=True).values
        assert torch.allclose(max_pooled[b], ranked[0])
        assert torch.allclose(top_two_mean[b], ranked[:2].mean(dim=0))


def test_gpo_rank_weights_respect_lengths():
    torch.manual_seed(0)
    gpo = GPO()
    lengths = torch.tensor([4, 1, 2, 4])
    weights = gpo.rank_weights(lengths, 6)
    beyond = torch.arange(6) >= lengths.unsqueeze(1)
    assert weights.shape == (4, 6)
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))
    assert (weights[beyond] == 0).all()
    assert torch.allclose(weights[0], weights[3])
    assert torch.allclose(gpo.rank_weights(torch.tensor([2]), 3)[0, :2], weights[2, :2], atol=1e-6)


def test_gpo_rejects_bad_lengths():
    gpo = GPO()
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        gpo(torch.randn(2, 3, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        gpo(torch.randn(2, 3, 4), torch.tensor([4, 3]))
    with pytest.raises(TypeError, match="integer"):
        gpo(torch.randn(2, 3, 4), torch.tensor([1.0, 3.0]))


def test_factory_builds_every_kind():
    assert isinstance(build_image_encoder("global", 8, input_dim=4), GlobalImageEncoder)
    assert isinstance(build_image_encoder("Region", 8, input_dim=4), RegionImageEncoder)
    assert isinstance(build_image_encoder(" thumbnail ", 8, channels=(4,)), ThumbnailCNN)
    assert isinstance(build_text_encoder("embedding", 8, input_dim=4), EmbeddingTextEncoder)
    assert isinstance(build_text_encoder("GRU", 8, vocab_size=10, word_dim=4), GRUTextEncoder)


def test_factory_passes_kwargs():
    encoder = build_image_encoder("region", 8, input_dim=4, region_drop=0.5)
    assert encoder.region_drop == 0.5


def test_factory_unknown_kind_lists_choices():
    with pytest.raises(ValueError) as image_error:
        build_image_encoder("vit", 8, input_dim=4)
    with pytest.raises(ValueError) as text_error:
        build_text_encoder("bert", 8, input_dim=4)
    for kind in IMAGE_ENCODERS:
        assert kind in str(image_error.value)
    for kind in TEXT_ENCODERS:
        assert kind in str(text_error.value)


def test_factory_missing_sizes_named():
    with pytest.raises(ValueError, match="input_dim"):
        build_image_encoder("global", 8)
    with pytest.raises(ValueError, match="input_dim"):
        build_image_encoder("region", 8)
    with pytest.raises(ValueError, match="input_dim"):
        build_text_encoder("embedding", 8, vocab_size=10)
    with pytest.raises(ValueError, match="vocab_size"):
        build_text_encoder("gru", 8, input_dim=4)


@pytest.mark.shared_data
@pytest.mark.skipif(not FLICKR8K.is_dir(), reason=f"shared Flickr8k precomp data not found at {FLICKR8K}")
def test_encoders_on_flickr8k_features():
    regions = torch.from_numpy(np.array(np.load(FLICKR8K / "dev_regions.npy", mmap_mode="r")[:8]))
    images = torch.from_numpy(np.array(np.load(FLICKR8K / "dev_ims.npy", mmap_mode="r")[:8]))
    captions = torch.from_numpy(np.array(np.load(FLICKR8K / "dev_caps_minilm.npy", mmap_mode="r")[:8]))
    torch.manual_seed(0)
    encoders = {
        "region": (build_image_encoder("region", 32, input_dim=regions.shape[-1]), regions),
        "global": (build_image_encoder("global", 32, input_dim=images.shape[-1]), images),
        "embedding": (build_text_encoder("embedding", 32, input_dim=captions.shape[-1]), captions),
    }
    for name, (encoder, features) in encoders.items():
        assert features.dtype == torch.float16, name
        out = encoder.eval()(features)
        assert out.shape == (8, 32), name
        assert torch.isfinite(out).all(), name
        assert torch.allclose(out.norm(dim=1), torch.ones(8), atol=1e-5), name


def test_empty_batch_rejected():
    with pytest.raises(ValueError, match="at least one"):
        GPO()(torch.randn(0, 3, 4))
    encoder = GRUTextEncoder(VOCAB_SIZE, EMBED_DIM, word_dim=8)
    empty = {"tokens": torch.zeros(0, 3, dtype=torch.long), "lengths": torch.zeros(0, dtype=torch.long)}
    with pytest.raises(ValueError, match="at least one"):
        encoder(empty)
