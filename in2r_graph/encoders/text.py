"""Text encoders: an MLP over precomputed caption embeddings and a bi-GRU over
word ids pooled with GPO.

Every encoder returns L2-normalised embeddings of shape (B, embed_dim) in its
parameters' dtype (float32 by default) on the input's device. In training
mode each one applies its augmentation and dropout, so two forward passes of
one batch give two different views. In eval mode the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from in2r_graph.encoders.gpo import GPO
from in2r_graph.encoders.layers import (
    ResidualProjection,
    VectorEncoder,
    apply_to_valid,
    check_lengths,
    compact_kept,
    ensure_one_kept,
    lengths_to_mask,
)

# Ids fixed by in2r_graph.data.vocab.Vocabulary.
PAD_ID = 0
UNK_ID = 1


class EmbeddingTextEncoder(VectorEncoder):
    """Encoder of one precomputed embedding per caption (for example from a
    sentence-transformer).

    Applies feature dropout (training only), a linear projection with a
    two-layer MLP residual, and L2 normalisation.

    Args:
        input_dim: Size of the caption embeddings.
        embed_dim: Size of the joint embedding.
        hidden_dim: Hidden size of the MLP residual. Defaults to
            ``max(embed_dim // 2, 1)``.
        dropout: Probability of zeroing each input feature in training mode.
        norm: Normalisation inside the MLP, ``"layer"`` (default) or ``"batch"``.

    Shapes:
        - input: (B, input_dim), float16 or float32
        - output: (B, embed_dim), L2-normalised
    """


def augment_tokens(
    tokens: Tensor,
    lengths: Tensor,
    prob: float,
    vocab_size: int,
    unk_id: int = UNK_ID,
) -> tuple[Tensor, Tensor]:
    """Randomly mask, replace or remove tokens of a padded batch.

    Each valid token is picked with probability ``prob``. A picked token is,
    with equal chance, masked (set to ``unk_id``), replaced by a random word
    id, or removed. Random ids are drawn from the ids above ``unk_id``, or are
    ``unk_id`` when the vocabulary has no other word. Every caption keeps at
    least one token. Removed tokens are squeezed out, so the output is again a padded
    batch with zeros after each caption's new length.

    Args:
        tokens: Padded word ids, 0 = padding.
        lengths: Number of valid tokens per caption.
        prob: Probability of picking each token.
        vocab_size: Number of word ids, including padding and ``<unk>``.
        unk_id: Id of the unknown word.

    Returns:
        The augmented tokens and their lengths.

    Shapes:
        - tokens: (B, L)
        - lengths: (B,)
        - output: (B, L') with L' <= L, and lengths (B,)
    """
    device = tokens.device
    valid = lengths_to_mask(lengths, tokens.shape[1])  # (B, L)
    picked = valid & (torch.rand(tokens.shape, device=device) < prob)
    action = torch.randint(0, 3, tokens.shape, device=device)

    masked = picked & (action == 0)
    tokens = tokens.masked_fill(masked, unk_id)

    replaced = picked & (action == 1)
    first_word = unk_id + 1
    if vocab_size > first_word:
        random_ids = torch.randint(first_word, vocab_size, tokens.shape, device=device)
    else:
        random_ids = torch.full_like(tokens, unk_id)
    tokens = torch.where(replaced, random_ids, tokens)

    removed = picked & (action == 2)
    keep = ensure_one_kept(valid & ~removed, valid)
    tokens, lengths = compact_kept(tokens, keep)  # (B, L')
    tokens = tokens.masked_fill(~lengths_to_mask(lengths, tokens.shape[1]), PAD_ID)
    return tokens, lengths


class GRUTextEncoder(nn.Module):
    """Encoder of tokenised captions: word embeddings, bi-GRU, GPO.

    Word embeddings feed a bidirectional GRU, which reads only the valid
    tokens because the sequences are packed. The forward and backward states
    of each token are averaged and projected by a linear layer with a
    two-layer MLP residual. GPO pools the tokens, and the result is
    L2-normalised.

    In training mode each token is picked with probability ``token_augment``
    and then masked, replaced or removed (see :func:`augment_tokens`), and the
    word embeddings are dropped out with probability ``dropout``.

    Args:
        vocab_size: Number of word ids, including ``<pad>`` = 0 and
            ``<unk>`` = ``unk_id``.
        embed_dim: Size of the joint embedding, also the hidden size of each
            GRU direction.
        word_dim: Size of the word embeddings (300 matches GloVe vectors).
        num_layers: Number of stacked GRU layers.
        token_augment: Probability of augmenting each token in training mode.
        dropout: Dropout on the word embeddings, and between stacked GRU
            layers when ``num_layers > 1``.
        hidden_dim: Hidden size of the MLP residual. Defaults to
            ``max(embed_dim // 2, 1)``.
        norm: Normalisation inside the MLP, ``"layer"`` (default) or
            ``"batch"``. Padding tokens never enter either one.
        gpo_dim: Size of the GPO rank encodings and of its GRU.
        unk_id: Id of the unknown word, used for masking.

    Shapes:
        - captions: a mapping with ``"tokens"``, int64 (B, L) padded with 0, and
          ``"lengths"``, int64 (B,) in [1, L]
        - output: (B, embed_dim), L2-normalised
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        word_dim: int = 300,
        num_layers: int = 1,
        token_augment: float = 0.2,
        dropout: float = 0.1,
        *,
        hidden_dim: int | None = None,
        norm: str = "layer",
        gpo_dim: int = 32,
        unk_id: int = UNK_ID,
    ) -> None:
        super().__init__()

        if vocab_size <= unk_id:
            raise ValueError(
                f"vocab_size must exceed unk_id={unk_id} (ids 0 and {unk_id} are <pad> and <unk>), "
                f"got {vocab_size}"
            )
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive integer, got {embed_dim}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers}")
        if not 0.0 <= token_augment < 1.0:
            raise ValueError(f"token_augment must lie in [0, 1), got {token_augment}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")

        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.token_augment = token_augment
        self.unk_id = unk_id

        self.word_embedding = nn.Embedding(vocab_size, word_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            word_dim,
            embed_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = ResidualProjection(embed_dim, embed_dim, hidden_dim, norm=norm)
        self.pool = GPO(encoding_dim=gpo_dim, hidden_dim=gpo_dim)

    @torch.no_grad()
    def load_word_vectors(self, vectors: Tensor) -> None:
        """Copy pretrained word vectors (for example GloVe) into the embedding.

        Row i must be the vector of word id i. The ``<pad>`` row is zeroed.

        Raises:
            ValueError: If ``vectors`` does not have shape (vocab_size, word_dim).

        Shapes:
            - vectors: (vocab_size, word_dim)
        """
        expected = tuple(self.word_embedding.weight.shape)
        if tuple(vectors.shape) != expected:
            raise ValueError(f"vectors must have shape {expected} (vocab_size, word_dim), got {tuple(vectors.shape)}")
        self.word_embedding.weight.copy_(vectors)
        self.word_embedding.weight[PAD_ID].zero_()

    def forward(self, captions: Mapping[str, Tensor]) -> Tensor:
        tokens, lengths = self._check_input(captions)

        if self.training and self.token_augment > 0:
            tokens, lengths = augment_tokens(tokens, lengths, self.token_augment, self.vocab_size, self.unk_id)
        else:
            # Columns past the longest caption are only padding, so dropping
            # them saves work.
            tokens = tokens[:, : int(lengths.max())]
        max_len = tokens.shape[1]

        words = self.dropout(self.word_embedding(tokens))  # (B, L, word_dim)
        packed = pack_padded_sequence(words, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=max_len)  # (B, L, 2 * embed_dim)
        states = states.view(*states.shape[:2], 2, -1).mean(dim=2)  # (B, L, embed_dim)

        mask = lengths_to_mask(lengths, max_len)
        states = apply_to_valid(self.head, states, mask)  # (B, L, embed_dim)
        pooled = self.pool(states, lengths)  # (B, embed_dim)
        return F.normalize(pooled, dim=-1)

    def _check_input(self, captions: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        if not isinstance(captions, Mapping) or "tokens" not in captions or "lengths" not in captions:
            found = sorted(captions) if isinstance(captions, Mapping) else type(captions).__name__
            raise TypeError(f"captions must be a mapping with keys 'tokens' and 'lengths', got {found}")
        tokens = captions["tokens"]
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point:
            found = (tokens.dtype, tuple(tokens.shape)) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(f"captions['tokens'] must be an integer tensor of shape (B, L), got {found}")
        if tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(
                "captions['tokens'] must contain at least one caption and one token per caption, "
                f"got shape {tuple(tokens.shape)}"
            )
        lengths = check_lengths(captions["lengths"], tokens.shape[0], tokens.shape[1], name="captions['lengths']")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"captions['tokens'] must hold ids in [0, {self.vocab_size - 1}] (vocab_size={self.vocab_size}), "
                f"got values in [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.long(), lengths.to(tokens.device)
