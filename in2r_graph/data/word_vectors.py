"""Pretrained word vectors in the GloVe text format, read from a local file.

The project never downloads word vectors: the user passes the path of a file
they already have. Each line is a word followed by its D values, separated by
single spaces, in UTF-8 (``the 0.418 0.24968 -0.41242 ...``). A first line of
two integers, the header of the word2vec text format (``400000 300``), is
skipped.

Only the lines of vocabulary words are parsed, so a multi-gigabyte file costs
one pass over its lines and memory for the vocabulary only. Lines of other
words are not checked, which also skips the few words with spaces in them
that some published GloVe files contain (caption tokens never have spaces).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["read_word_vectors"]

logger = logging.getLogger(__name__)


def _is_word2vec_header(fields: list[str]) -> bool:
    return len(fields) == 2 and all(field.isdigit() for field in fields)


def read_word_vectors(
    path: str | os.PathLike[str], words: Sequence[str], dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read the vectors of ``words`` from a GloVe-format text file.

    Args:
        path: The local vectors file.
        words: The vocabulary in id order (row ``i`` of the result belongs to
            ``words[i]``). Special tokens such as ``<pad>`` simply match no line.
        dim: D, the expected number of values per vector (``model.word_dim``).

    Returns:
        ``(vectors, found)``: float32 vectors, with zero rows for words that the
        file does not contain, and a boolean mask of the words it contains.
        When a word occurs on several lines, its first line is used.

    Raises:
        DataError: If the file is missing or is a folder, is not UTF-8, a line
            of a vocabulary word does not hold ``dim`` finite numbers after
            the word, or the file contains none of the words.
        ValueError: If ``dim`` is not positive.

    Shapes:
        - vectors: ``(len(words), dim)``
        - found: ``(len(words),)``
    """
    if dim < 1:
        raise ValueError(f"dim must be a positive number of values per vector, got {dim}")
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "not found"
        raise DataError(
            f"word vectors file {path} {state}; expected a local text file with one 'word v1 ... v{dim}' line "
            "per word (GloVe format). in2r-graph never downloads word vectors: download them yourself and pass "
            "the file's path in model.word_vectors"
        )

    ids = {word: index for index, word in enumerate(words)}
    vectors = np.zeros((len(words), dim), dtype=np.float32)
    found = np.zeros(len(words), dtype=bool)
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}: line {number} has an invalid UTF-8 byte 0x{raw[error.start]:02x}; expected a UTF-8 "
                    "text file in GloVe format"
                ) from None
            word, _, rest = line.partition(" ")
            if number == 1 and _is_word2vec_header(line.split()):
                continue
            if word not in ids:
                continue
            index = ids[word]
            if found[index]:
                continue
            values = rest.split()
            if len(values) != dim:
                raise DataError(
                    f"{path}: line {number} (word {word!r}) has {len(values)} values; expected {dim} "
                    f"(model.word_dim). Set model.word_dim to the size of this file's vectors"
                )
            try:
                vector = np.asarray(values, dtype=np.float32)
            except ValueError:
                raise DataError(
                    f"{path}: line {number} (word {word!r}) contains a value that is not a number; expected "
                    f"'word v1 ... v{dim}'"
                ) from None
            if not np.isfinite(vector).all():
                raise DataError(
                    f"{path}: line {number} (word {word!r}) contains NaN or a value beyond the float32 range; "
                    "expected finite numbers"
                )
            vectors[index] = vector
            found[index] = True

    if not found.any():
        raise DataError(
            f"{path}: none of the {len(words)} vocabulary words has a vector in this file; expected a GloVe-format "
            "file ('word v1 ... vD' per line) in the captions' language"
        )
    logger.info("read word vectors for %d of %d vocabulary words from %s", int(found.sum()), len(words), path)
    return vectors, found
