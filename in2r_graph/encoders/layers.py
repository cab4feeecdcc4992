"""Building blocks shared by the encoders: the residual projection head, the
normalisation factory and helpers for padded sets of vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("layer", "batch")


def make_norm(norm: str, dim: int) -> nn.Module:
    """Build a feature normalisation layer for inputs of shape (N, dim).

    Args:
        norm: ``"layer"`` for :class:`torch.nn.LayerNorm` or ``"batch"`` for
            :class:`torch.nn.BatchNorm1d`.
        dim: Number of features.

    Raises:
        ValueError: If ``norm`` is not one of ``NORMS``.
    """
    if norm == "layer":
        return nn.LayerNorm(dim)
    if norm == "batch":
        return nn.BatchNorm1d(dim)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class MLP(nn.Module):
    """Two-layer perceptron: linear, normalisation, ReLU, linear.

    Args:
        input_dim: Size of the input features.
        hidden_dim: Size of the hidden layer.
        output_dim: Size of the output features.
        norm: Normalisation after the first layer, ``"layer"`` or ``"batch"``.

    Shapes:
        - input: (N, input_dim)
        - output: (N, output_dim)
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, norm: str = "layer") -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.norm = make_norm(norm, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.norm(self.fc1(x))))


class ResidualProjection(nn.Module):
    """Linear projection plus a two-layer MLP residual: ``fc(x) + mlp(x)``.

    The linear branch carries the input straight into the joint space, and the
    MLP branch learns a non-linear correction on top of it.

    Args:
        input_dim: Size of the input features.
        output_dim: Size of the output features (the joint embedding size).
        hidden_dim: Hidden size of the MLP branch. Defaults to
            ``max(output_dim // 2, 1)``.
        norm: Normalisation inside the MLP branch, ``"layer"`` or ``"batch"``.

    Shapes:
        - input: (..., input_dim), any number of leading dimensions
        - output: (..., output_dim)
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dim: int | None = None,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if hidden_dim is None:
            hidden_dim = max(output_dim // 2, 1)
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be a positive integer or None, got {hidden_dim}")
        self.fc = nn.Linear(input_dim, output_dim)
        self.mlp = MLP(input_dim, hidden_dim, output_dim, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        # BatchNorm1d accepts only (N, C), so every leading dimension is flattened.
        leading = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])  # (N, input_dim)
        out = self.fc(flat) + self.mlp(flat)  # (N, output_dim)
        return out.reshape(*leading, out.shape[-1])


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Build the validity mask of a padded batch.

    Args:
        lengths: Number of valid leading entries per row.
        max_len: Padded length.

    Returns:
        Boolean mask, True where the entry is valid.

    Shapes:
        - lengths: (B,)
        - output: (B, max_len)
    """
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def check_lengths(lengths: Tensor, batch_size: int, max_len: int, name: str = "lengths") -> Tensor:
    """Validate the lengths of a padded batch and return them as int64.

    Raises:
        TypeError: If ``lengths`` is not an integer tensor.
        ValueError: If its shape is not (batch_size,) or a value lies outside
            [1, max_len].

    Shapes:
        - lengths: (B,)
    """
    if not isinstance(lengths, Tensor) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        found = lengths.dtype if isinstance(lengths, Tensor) else type(lengths).__name__
        raise TypeError(f"{name} must be an integer tensor, got {found}")
    if lengths.shape != (batch_size,):
        raise ValueError(f"{name} must have shape ({batch_size},), got {tuple(lengths.shape)}")
    lengths = lengths.long()
    if batch_size > 0:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > max_len:
            raise ValueError(
                f"{name} must lie in [1, {max_len}] (at least one valid entry, at most the "
                f"padded length), got values in [{low}, {high}]"
            )
    return lengths


def apply_to_valid(module: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    """Apply a row-wise module to the valid entries of a padded batch only.

    Padding rows never enter the module, so they cannot shift BatchNorm
    statistics, and the output at padding positions is zero.

    Args:
        module: Maps (N, D_in) to (N, D_out).
        x: Padded batch.
        mask: Validity mask, or None when every entry is valid.

    Shapes:
        - x: (B, K, D_in)
        - mask: (B, K)
        - output: (B, K, D_out)
    """
    if mask is None:
        return module(x)
    valid = module(x[mask])  # (N_valid, D_out)
    out = valid.new_zeros(*mask.shape, valid.shape[-1])
    out[mask] = valid
    return out


def compact_kept(x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Move the kept entries of each row to the front, in their original order.

    The result is truncated to the largest number of kept entries. Entries
    after a row's new length are left over from the input and must be treated
    as padding.

    Args:
        x: Padded batch of vectors or ids.
        keep: True for the entries to keep. Every row must keep at least one.

    Returns:
        The compacted batch and the number of kept entries per row.

    Shapes:
        - x: (B, K) or (B, K, D)
        - keep: (B, K)
        - output: (B, K', ...) with K' = max kept count, and lengths (B,)
    """
    lengths = keep.sum(dim=1)  # (B,)
    # A stable sort of the "dropped" flag puts kept entries first, order kept.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices  # (B, K)
    new_len = int(lengths.max()) if lengths.numel() else 0
    order = order[:, :new_len]
    if x.dim() == 3:
        order = order.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    return x.gather(1, order), lengths


def ensure_one_kept(keep: Tensor, valid: Tensor) -> Tensor:
    """Keep one random valid entry in each row where ``keep`` dropped them all.

    Shapes:
        - keep, valid: (B, K) boolean, every row of ``valid`` has a True
        - output: (B, K)
    """
    empty = ~keep.any(dim=1)  # (B,)
    # Padding scores -1 and valid entries a uniform draw in [0, 1), so the
    # argmax is a valid position chosen uniformly at random.
    scores = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, -1.0)
    fallback = F.one_hot(scores.argmax(dim=1), valid.shape[1]).bool()  # (B, K)
    return keep | (fallback & empty.unsqueeze(1))


def to_parameter_dtype(x: Tensor, module: nn.Module) -> Tensor:
    """Cast a floating input to the dtype of ``module``'s parameters.

    Features are often stored as float16, but the encoders compute in their
    own parameter dtype (float32 unless the caller converted the module).
    """
    dtype = next(module.parameters()).dtype
    return x.to(dtype=dtype)


def check_features(x: Tensor, name: str, ndim: int, last_dim: int | None) -> None:
    """Validate a floating feature tensor's rank and last dimension.

    Raises:
        TypeError: If ``x`` is not a floating-point tensor.
        ValueError: If it has the wrong number of dimensions or the wrong last
            dimension.
    """
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        found = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point tensor, got {found}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(
            f"{name} must have last dimension {last_dim} (the encoder's input_dim), "
            f"got shape {tuple(x.shape)}"
        )


class VectorEncoder(nn.Module):
    """Encoder of one precomputed feature vector per item.

    Applies feature dropout (training only), a :class:`ResidualProjection` and
    L2 normalisation. Two forward passes in training mode draw different
    dropout masks and so give two views of the same batch.

    Args:
        input_dim: Size of the input features.
        embed_dim: Size of the joint embedding.
        hidden_dim: Hidden size of the MLP residual. Defaults to
            ``max(embed_dim // 2, 1)``.
        dropout: Probability of zeroing each input feature in training mode.
        norm: Normalisation inside the MLP, ``"layer"`` (default, independent
            of the batch, works with batches of one) or ``"batch"``.

    Shapes:
        - input: (B, input_dim), any floating dtype
        - output: (B, embed_dim), L2-normalised, in the parameters' dtype
    """

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.input_dim = input_dim
        self.embed_dim = embed_dim
        self.dropout = nn.Dropout(dropout)
        self.head = ResidualProjection(input_dim, embed_dim, hidden_dim, norm=norm)

    def forward(self, features: Tensor) -> Tensor:
        check_features(features, "features", ndim=2, last_dim=self.input_dim)
        x = self.dropout(to_parameter_dtype(features, self))
        return F.normalize(self.head(x), dim=-1)  # (B, embed_dim)
