"""Tests of the caption tokenizer, the vocabulary and token batching."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import torch

from in2r_graph.data.vocab import PAD_ID, UNK_ID, Vocabulary, collate_tokens, tokenize

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR8K = SHARED_DATA / "flickr8k_precomp"

CAPTIONS = [
    "A dog runs on the grass.",
    "Two dogs play with a ball!",
    "A man throws the ball to a dog",
]


def test_tokenize_lowercase_punctuation():
    assert tokenize("A man, riding a HORSE!") == ["a", "man", "riding", "a", "horse"]


def test_tokenize_unicode_words():
    assert tokenize("Café crème à Zürich, ΣΟΦΙΑ") == ["café", "crème", "à", "zürich", "σοφια"]


def test_tokenize_decomposed_accents():
    decomposed = unicodedata.normalize("NFD", "Café")
    assert decomposed != "Café"
    assert tokenize(decomposed) == ["café"]


def test_tokenize_numbers():
    assert tokenize("3 men, 2.5 kg, 1,000 birds") == ["3", "men", "2.5", "kg", "1,000", "birds"]


def test_tokenize_apostrophes_and_underscores():
    assert tokenize("the dog's snake_case") == ["the", "dog", "s", "snake", "case"]


def test_tokenize_fullwidth_and_cjk():
    assert tokenize("ＡＢＣ 東京タワー") == ["abc", "東京タワー"]


def test_tokenize_empty_and_punctuation_only():
    assert tokenize("") == []
    assert tokenize(" ... !? ") == []


def test_tokenize_rejects_non_string():
    with pytest.raises(TypeError, match="str"):
        tokenize(b"bytes")


def test_build_orders_by_count():
    vocab = Vocabulary.build(CAPTIONS)
    words = vocab.words
    assert words[:2] == ["<pad>", "<unk>"]
    assert words[2] == "a"
    assert words[3:6] == ["ball", "dog", "the"]
    assert len(vocab) == len(words)


def test_build_min_count_and_max_size():
    assert Vocabulary.build(CAPTIONS, min_count=2).words == ["<pad>", "<unk>", "a", "ball", "dog", "the"]
    assert Vocabulary.build(CAPTIONS, max_size=1).words == ["<pad>", "<unk>", "a"]
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(CAPTIONS, min_count=0)


def test_encode_unknown_maps_to_unk():
    vocab = Vocabulary.build(CAPTIONS)
    ids = vocab.encode("A zebra runs")
    assert ids == [vocab.word_to_id("a"), UNK_ID, vocab.word_to_id("runs")]
    assert vocab.word_to_id("zebra") == UNK_ID
    assert "zebra" not in vocab


def test_decode_skips_padding():
    vocab = Vocabulary.build(CAPTIONS)
    ids = vocab.encode("the dog") + [PAD_ID, PAD_ID]
    assert vocab.decode(ids) == ["the", "dog"]
    with pytest.raises(IndexError, match="word id"):
        vocab.id_to_word(len(vocab))


def test_dict_round_trip():
    vocab = Vocabulary.build(CAPTIONS)
    state = vocab.to_dict()
    assert Vocabulary.from_dict(state) == vocab
    assert all(isinstance(word, str) for word in state["words"])


def test_checkpoint_round_trip(tmp_path):
    vocab = Vocabulary.build(CAPTIONS)
    path = tmp_path / "checkpoint.pt"
    torch.save({"vocab": vocab.to_dict()}, path)
    loaded = torch.load(path, weights_only=True)
    restored = Vocabulary.from_dict(loaded["vocab"])
    assert restored == vocab
    assert restored.encode("a dog") == vocab.encode("a dog")


def test_from_dict_rejects_bad_state():
    with pytest.raises(ValueError, match="words"):
        Vocabulary.from_dict({"itos": []})
    with pytest.raises(ValueError, match="<pad>"):
        Vocabulary.from_dict({"words": ["dog", "cat"]})


def test_constructor_rejects_duplicates():
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["dog", "dog"])
    with pytest.raises(ValueError, match="special"):
        Vocabulary(["<unk>"])


def test_collate_pads_with_zero():
    batch = collate_tokens([[4, 5, 6], [7], [8, 9]])
    assert batch["tokens"].tolist() == [[4, 5, 6], [7, 0, 0], [8, 9, 0]]
    assert batch["lengths"].tolist() == [3, 1, 2]
    assert batch["tokens"].dtype == torch.long
    assert batch["lengths"].dtype == torch.long


def test_collate_empty_caption_becomes_unk():
    batch = collate_tokens([[], [4, 5]])
    assert batch["tokens"][0].tolist() == [UNK_ID, PAD_ID]
    assert batch["lengths"].tolist() == [1, 2]


def test_collate_accepts_tensors():
    batch = collate_tokens([torch.tensor([3, 4]), (5,)])
    assert batch["tokens"].tolist() == [[3, 4], [5, 0]]


def test_collate_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        collate_tokens([])
    with pytest.raises(TypeError, match="integer"):
        collate_tokens([[1.5, 2.0]])
    with pytest.raises(ValueError, match="non-negative"):
        collate_tokens([[3, -1]])


@pytest.mark.shared_data
@pytest.mark.skipif(not FLICKR8K.is_dir(), reason=f"shared Flickr8k precomp data not found at {FLICKR8K}")
def test_flickr8k_vocabulary_coverage():
    train = (FLICKR8K / "train_caps.txt").read_text(encoding="utf-8").splitlines()
    dev = (FLICKR8K / "dev_caps.txt").read_text(encoding="utf-8").splitlines()
    vocab = Vocabulary.build(train, min_count=2)
    dev_ids = [vocab.encode(caption) for caption in dev]
    num_tokens = sum(len(ids) for ids in dev_ids)
    num_unknown = sum(ids.count(UNK_ID) for ids in dev_ids)
    assert 2_000 < len(vocab) < 20_000
    assert num_unknown / num_tokens < 0.02
    assert all(dev_ids)
