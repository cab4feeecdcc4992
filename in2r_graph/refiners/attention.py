"""The reference refiner: multi-head scaled dot-product attention over the nodes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import to_dense_batch

from .base import Refiner, torch_dense_mask
from .registry import register_refiner


class DenseGraphAttention(nn.Module):
    """Multi-head attention in which each node attends to its in-neighbours and itself.

    On a complete graph this is plain self-attention over the neighbourhood.
    Edge weights, when given, enter as an additive ``log(w)`` bias on the
    attention logits.

    Shapes:
        x: (N, dim) -> (N, dim).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention refiner: dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attention_dropout = dropout

    def forward(self, x: Tensor, batch: Batch, edge_weight: Tensor | None) -> Tensor:
        dense, node_mask = to_dense_batch(x, batch.batch, batch_size=batch.num_graphs)  # (B, n, D), (B, n)
        num_graphs, nodes, dim = dense.shape
        allowed = torch_dense_mask(batch, nodes) & node_mask.unsqueeze(1)  # (B, n, n)
        bias = torch.zeros(num_graphs, nodes, nodes, dtype=dense.dtype, device=dense.device)
        if edge_weight is not None:
            source, target = batch.edge_index
            graph = batch.batch[target]
            bias[graph, target - batch.ptr[graph], source - batch.ptr[graph]] = torch.log(
                edge_weight.to(dense.dtype).clamp_min(1e-6)
            )
        bias = bias.masked_fill(~allowed, float("-inf")).unsqueeze(1)  # (B, 1, n, n)

        q, k, v = self.qkv(dense).view(num_graphs, nodes, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attention_dropout if self.training else 0.0
        )  # (B, heads, n, D / heads)
        attended = attended.transpose(1, 2).reshape(num_graphs, nodes, dim)
        return self.out(attended)[node_mask]


@register_refiner("attention")
class AttentionRefiner(Refiner):
    """Multi-head attention over the neighbourhood, residual, LayerNorm, mean readout.

    The design of the original IN2R refiner, expressed on the graph batch so
    that topologies other than the complete graph restrict who attends to whom.
    """

    supports_edge_weight = True
    activation = False

    def build_layer(self) -> nn.Module:
        return DenseGraphAttention(self.hidden_dim, self.heads, self.dropout_rate)

    def apply_layer(self, layer: nn.Module, x: Tensor, batch: Batch, edge_weight: Tensor | None) -> Tensor:
        return layer(x, batch, edge_weight)
