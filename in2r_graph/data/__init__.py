"""Data: precomp readers, the bundled dataset, noise conventions, batches, vocabulary."""

from .errors import DataError
from .noise import CONVENTIONS, load_noise, make_noise, noisy_caption_to_image, realised_noise_rate, save_noise
from .pairs import PairData
from .precomp import PrecompSplit, bundled_dataset_root, load_dataset, load_split
from .vocab import Vocabulary, collate_tokens, tokenize
from .word_vectors import read_word_vectors

__all__ = [
    "CONVENTIONS",
    "DataError",
    "PairData",
    "PrecompSplit",
    "Vocabulary",
    "bundled_dataset_root",
    "collate_tokens",
    "load_dataset",
    "load_noise",
    "load_split",
    "make_noise",
    "noisy_caption_to_image",
    "read_word_vectors",
    "realised_noise_rate",
    "save_noise",
    "tokenize",
]
