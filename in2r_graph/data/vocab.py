"""Caption tokenizer, word vocabulary and padding of token batches.

The tokenizer needs no downloaded data: it lowercases the text and takes runs
of Unicode letters and digits as words. The vocabulary serialises to plain
lists, so it can be stored in a checkpoint loaded with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
SPECIAL_TOKENS = (PAD, UNK)

# A decimal number such as "3.5" or "1,000" is one token. Otherwise a token is
# a run of Unicode letters and digits, so punctuation, apostrophes and
# underscores separate words ("dog's" -> "dog", "s"). Scripts written without
# spaces (Chinese, Japanese) come out as one token per run.
_TOKEN_PATTERN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Split a caption into lowercase word and number tokens.

    The text is first NFKC-normalised, so composed and decomposed accents give
    the same token and full-width characters become their usual forms.

    Raises:
        TypeError: If ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower()
    return _TOKEN_PATTERN.findall(text)


class Vocabulary:
    """Mapping between words and integer ids.

    Id 0 is ``<pad>`` and id 1 is ``<unk>``. The words follow from id 2 in the
    order given. Words that are not in the vocabulary encode as ``<unk>``.

    Args:
        words: The words of the vocabulary, without the special tokens. Each
            word must be unique.

    Raises:
        ValueError: If a word repeats or is a special token.
    """

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._words: list[str] = list(SPECIAL_TOKENS)
        self._ids: dict[str, int] = {word: i for i, word in enumerate(SPECIAL_TOKENS)}
        for word in words:
            if not isinstance(word, str) or not word:
                raise ValueError(f"every word must be a non-empty str, got {word!r}")
            if word in self._ids:
                kind = "a special token" if word in SPECIAL_TOKENS else "a duplicate"
                raise ValueError(f"word {word!r} is {kind}, but each word must appear once")
            self._ids[word] = len(self._words)
            self._words.append(word)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """Build a vocabulary from the words of ``captions``.

        Words are ordered by decreasing count, then alphabetically, so the same
        captions always give the same ids.

        Args:
            captions: Raw caption strings, tokenised with :func:`tokenize`.
            min_count: Keep only words seen at least this many times.
            max_size: Keep at most this many words (special tokens not
                counted), or None to keep all.

        Raises:
            ValueError: If ``min_count`` < 1 or ``max_size`` < 0.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be non-negative or None, got {max_size}")
        counts: Counter[str] = Counter()
        num_captions = 0
        for caption in captions:
            counts.update(tokenize(caption))
            num_captions += 1
        selected_words = sorted(
            (word for word, n in counts.items() if n >= min_count), key=lambda word: (-counts[word], word)
        )
        if max_size is not None:
            selected_words = selected_words[:max_size]
        logger.info(
            "Built a vocabulary of %d words (%d distinct words in %d captions, min_count=%d)",
            len(selected_words),
            len(counts),
            num_captions,
            min_count,
        )
        return cls(selected_words)

    @property
    def words(self) -> list[str]:
        """All words in id order, special tokens first (a copy)."""
        return list(self._words)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._ids

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._words == other._words

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    def word_to_id(self, word: str) -> int:
        """Return the id of ``word``, or ``UNK_ID`` when it is unknown."""
        return self._ids.get(word, UNK_ID)

    def id_to_word(self, index: int) -> str:
        """Return the word of id ``index``.

        Raises:
            IndexError: If ``index`` is not in [0, len(self)).
        """
        if not 0 <= index < len(self._words):
            raise IndexError(f"word id must lie in [0, {len(self._words) - 1}], got {index}")
        return self._words[index]

    def encode(self, text: str) -> list[int]:
        """Tokenise ``text`` and map every token to its id (unknown words to ``UNK_ID``)."""
        return [self._ids.get(token, UNK_ID) for token in tokenize(text)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to words, skipping ``<pad>``."""
        return [self.id_to_word(int(i)) for i in ids if int(i) != PAD_ID]

    def to_dict(self) -> dict[str, Any]:
        """Return the vocabulary as plain Python types, for checkpoints.

        The result is ``{"words": list[str]}`` with the special tokens
        first, and loads with ``torch.load(weights_only=True)``.
        """
        return {"words": list(self._words)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Vocabulary:
        """Rebuild a vocabulary from the output of :meth:`to_dict`.

        Raises:
            ValueError: If ``state`` has no ``"words"`` list or the list does not
                start with the special tokens.
        """
        words = state.get("words") if isinstance(state, dict) else None
        if not isinstance(words, list):
            raise ValueError(f"state must be a dict with a 'words' list, got {type(state).__name__}")
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                f"state['words'] must start with {list(SPECIAL_TOKENS)}, got {words[: len(SPECIAL_TOKENS)]}"
            )
        return cls(words[len(SPECIAL_TOKENS) :])


def collate_tokens(id_lists: Sequence[Sequence[int] | Tensor]) -> dict[str, Tensor]:
    """Pad a batch of token id lists into one tensor.

    An empty caption becomes the single token ``<unk>``, so every caption has
    at least one token.

    Args:
        id_lists: One sequence of word ids per caption (lists, tuples or 1-D
            integer tensors).

    Returns:
        ``{"tokens": ..., "lengths": ...}``, both int64 on the CPU, with
        tokens padded with ``PAD_ID``.

    Raises:
        TypeError: If a caption contains non-integer values.
        ValueError: If ``id_lists`` is empty, or a caption is not
            one-dimensional or holds a negative id.

    Shapes:
        - tokens: (B, L) with L the longest caption
        - lengths: (B,)
    """
    if len(id_lists) == 0:
        raise ValueError("id_lists must contain at least one caption, got an empty sequence")
    rows = []
    for i, ids in enumerate(id_lists):
        row = torch.as_tensor(ids)
        if row.dim() != 1:
            raise ValueError(f"id_lists[{i}] must be one-dimensional, got shape {tuple(row.shape)}")
        if row.numel() == 0:
            row = torch.tensor([UNK_ID])
        elif row.dtype.is_floating_point or row.dtype.is_complex or row.dtype == torch.bool:
            raise TypeError(f"id_lists[{i}] must contain integer ids, got dtype {row.dtype}")
        elif int(row.min()) < 0:
            raise ValueError(f"id_lists[{i}] must contain non-negative ids, got {int(row.min())}")
        rows.append(row.long())
    lengths = torch.tensor([row.numel() for row in rows], dtype=torch.long)  # (B,)
    tokens = torch.full((len(rows), int(lengths.max())), PAD_ID, dtype=torch.long)  # (B, L)
    for i, row in enumerate(rows):
        tokens[i, : row.numel()] = row
    return {"tokens": tokens, "lengths": lengths}
