"""A text encoder built on a Hugging Face transformers model stored in a local folder.

The model and its tokenizer are always loaded with ``local_files_only=True``,
so nothing is downloaded. The folder must contain ``config.json``, the tokenizer
files and, unless ``pretrained=False``, the weights (``model.safetensors`` or
``pytorch_model.bin``). Any folder written by ``save_pretrained`` works, for
example a sentence-transformers model such as all-MiniLM-L6-v2.

The encoder takes raw strings, so it can sit on either side of a paired
dataset (captions, docstrings, code, queries).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def mean_pool(hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
    """Average the hidden states of the real tokens of each sequence.

    Padding positions (mask 0) are left out. A row whose mask is all zeros
    returns zeros rather than NaN.

    Shapes:
        - hidden_states: (B, L, H)
        - attention_mask: (B, L), 1 for real tokens and 0 for padding
        - output: (B, H)
    """
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (hidden_states * weights).sum(dim=1)  # (B, H)
    count = weights.sum(dim=1).clamp(min=1.0)  # (B, 1)
    return total / count


class TransformersTextEncoder(nn.Module):
    """Transformer backbone, mean pooling, linear projection and L2 normalisation.

    Args:
        model_dir: Local folder of the model and tokenizer.
        embed_dim: Size of the joint embedding. The projection maps the
            backbone's hidden size to it.
        max_length: Maximum number of tokens per text; longer texts are
            truncated.
        pretrained: Load the weights from ``model_dir``. With ``False`` only
            ``config.json`` is read and the backbone starts from random
            weights (for tests and for training from scratch).
        freeze: Keep the backbone's weights fixed and run it without
            gradients, so only the projection trains.
        dropout: Dropout on the pooled vector before the projection, in
            training mode. The backbone's own dropout also stays active in
            training mode, so two forward passes give two different views.

    Raises:
        FileNotFoundError: If ``model_dir`` is not a folder, has no
            ``config.json``, or has no weights while ``pretrained`` is true.
        ValueError: If a size or probability is out of range.

    Shapes:
        - texts: a sequence of B strings, or a mapping with ``input_ids`` and
          ``attention_mask`` of shape (B, L) as returned by the tokenizer
        - output: (B, embed_dim), L2-normalised
    """

    def __init__(
        self,
        model_dir: str | Path,
        embed_dim: int,
        *,
        max_length: int = 128,
        pretrained: bool = True,
        freeze: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim={embed_dim} is invalid; expected a positive size")
        if max_length < 2:
            raise ValueError(f"max_length={max_length} is invalid; expected at least 2 (room for the special tokens)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} is invalid; expected a probability in [0, 1)")
        model_dir = Path(model_dir)
        _check_model_dir(model_dir, pretrained)

        # transformers takes seconds to import, so only this encoder pays for it.
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.model_dir = model_dir
        self.max_length = max_length
        self.freeze = freeze
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if pretrained:
            self.backbone = AutoModel.from_pretrained(model_dir, local_files_only=True)
        else:
            config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
            self.backbone = AutoModel.from_config(config)
            logger.info("transformers backbone from %s starts from random weights (pretrained=False)", model_dir)
        if freeze:
            self.backbone.requires_grad_(False)
        hidden_size = int(self.backbone.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(hidden_size, embed_dim)
        self.embed_dim = embed_dim

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Tokenise a batch of strings into padded ``input_ids`` and ``attention_mask`` (B, L)."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            found = type(texts).__name__ if isinstance(texts, str) else sorted({type(text).__name__ for text in texts})
            raise TypeError(f"texts must be a sequence of strings, got {found}")
        if len(texts) == 0:
            raise ValueError("texts is empty; expected at least one string")
        return dict(
            self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        )

    def pooled(self, texts: Sequence[str] | Mapping[str, Tensor]) -> Tensor:
        """Compute the mean-pooled last hidden states, before the projection.

        Shapes:
            - output: (B, hidden_size)
        """
        inputs = self.tokenize(texts) if not isinstance(texts, Mapping) else dict(texts)
        if "input_ids" not in inputs or "attention_mask" not in inputs:
            raise TypeError(f"tokenised texts must contain 'input_ids' and 'attention_mask', got keys {sorted(inputs)}")
        device = self.projection.weight.device
        inputs = {key: value.to(device) for key, value in inputs.items()}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(**inputs).last_hidden_state  # (B, L, H)
        return mean_pool(hidden, inputs["attention_mask"])  # (B, H)

    def forward(self, texts: Sequence[str] | Mapping[str, Tensor]) -> Tensor:
        pooled = self.pooled(texts)
        return F.normalize(self.projection(self.dropout(pooled)), dim=-1)

    def extra_repr(self) -> str:
        return f"model_dir={str(self.model_dir)!r}, embed_dim={self.embed_dim}, freeze={self.freeze}"


def _check_model_dir(model_dir: Path, pretrained: bool) -> None:
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model_dir {model_dir} is not a folder; expected a local transformers model folder")
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"model_dir {model_dir} has no config.json; expected a folder written by save_pretrained")
    if pretrained and not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"model_dir {model_dir} has no weights (expected one of {', '.join(WEIGHT_FILES)}); copy the weights "
            "there or pass pretrained=False to start from random weights"
        )
