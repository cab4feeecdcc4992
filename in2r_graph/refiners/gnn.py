"""Refiners built on PyTorch Geometric's message-passing operators."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, SAGEConv, TransformerConv
from torch_geometric.utils import add_self_loops, remove_self_loops, to_dense_batch

from .base import Refiner, torch_dense_mask
from .registry import register_refiner


class _EdgeAttrRefiner(Refiner):
    """Operators that take edge weights as a one-dimensional ``edge_attr``."""

    supports_edge_weight = True

    def apply_layer(self, layer: nn.Module, x: Tensor, batch: Batch, edge_weight: Tensor | None) -> Tensor:
        if edge_weight is None:
            return layer(x, batch.edge_index)
        return layer(x, batch.edge_index, edge_weight.view(-1, 1))


def dense_gat(layer: GATConv, x: Tensor, batch: Batch, edge_weight: Tensor | None) -> Tensor:
    """Run a head-averaging ``GATConv`` on a batch of small graphs as dense tensors.

    Computes the same function as ``layer(x, edge_index[, edge_weight])`` with
    the same parameters: self loops are added, and their edge weights are
    filled according to the layer's ``fill_value``. Attention coefficients and
    messages are computed per graph as ``(B, n, n)`` blocks instead of per
    edge. Neighbourhood graphs are small and often complete, and there the
    per-edge form, which gathers a ``heads x out_channels`` message for every
    edge, was 2.4 times slower (``benchmarks/perf/bench_refiners.py``).

    Raises:
        ValueError: if the layer concatenates its heads or has a residual
            connection, which this evaluation does not implement.

    Shapes:
        x: (N, C_in) -> (N, C_out).
    """
    if layer.concat or layer.res is not None:
        raise ValueError(
            "dense_gat supports GATConv layers built with concat=False and residual=False; "
            "call the layer itself for other settings"
        )
    heads, channels = layer.heads, layer.out_channels
    dense, node_mask = to_dense_batch(x, batch.batch, batch_size=batch.num_graphs)  # (B, n, C_in), (B, n)
    num_graphs, nodes, _ = dense.shape
    projected = layer.lin(dense).view(num_graphs, nodes, heads, channels)
    source_logit = (projected * layer.att_src).sum(-1)  # (B, n, heads)
    target_logit = (projected * layer.att_dst).sum(-1)
    logits = target_logit.unsqueeze(2) + source_logit.unsqueeze(1)  # (B, target, source, heads)
    if edge_weight is not None:
        logits = logits + _dense_edge_logits(layer, batch, edge_weight, nodes)
    logits = F.leaky_relu(logits, layer.negative_slope)
    # Edges plus a self loop per node; padded rows keep their loop, so no row is empty.
    allowed = torch_dense_mask(batch, nodes).unsqueeze(-1)
    alpha = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=2)
    alpha = F.dropout(alpha, p=layer.dropout, training=layer.training)
    out = alpha.permute(0, 3, 1, 2) @ projected.transpose(1, 2)  # (B, heads, n, C_out)
    out = out.mean(dim=1)
    if layer.bias is not None:
        out = out + layer.bias
    return out[node_mask]


def _dense_edge_logits(layer: GATConv, batch: Batch, edge_weight: Tensor, nodes: int) -> Tensor:
    """Return the edge-weight term of the attention logits as ``(B, n, n, heads)``."""
    edge_index, edge_attr = remove_self_loops(batch.edge_index, edge_weight.view(-1, 1))
    edge_index, edge_attr = add_self_loops(
        edge_index, edge_attr, fill_value=layer.fill_value, num_nodes=batch.num_nodes
    )
    per_edge = (layer.lin_edge(edge_attr).view(-1, layer.heads, layer.out_channels) * layer.att_edge).sum(-1)
    dense = per_edge.new_zeros(batch.num_graphs, nodes, nodes, layer.heads)
    source, target = edge_index
    graph = batch.batch[target]
    dense[graph, target - batch.ptr[graph], source - batch.ptr[graph]] = per_edge
    return dense


@register_refiner("gat")
class GATRefiner(_EdgeAttrRefiner):
    """Graph attention (GAT, Velickovic et al. 2018); heads are averaged.

    The layers are PyG ``GATConv`` modules (their parameters and checkpoints
    are those of ``GATConv``), evaluated with :func:`dense_gat`.
    """

    def build_layer(self) -> nn.Module:
        edge_dim = 1 if self.use_edge_weight else None
        return GATConv(
            self.hidden_dim, self.hidden_dim, heads=self.heads, concat=False, dropout=self.dropout_rate, edge_dim=edge_dim
        )

    def apply_layer(self, layer: nn.Module, x: Tensor, batch: Batch, edge_weight: Tensor | None) -> Tensor:
        return dense_gat(layer, x, batch, edge_weight)


@register_refiner("gatv2")
class GATv2Refiner(_EdgeAttrRefiner):
    """Dynamic graph attention (GATv2, Brody et al. 2022); heads are averaged."""

    def build_layer(self) -> nn.Module:
        edge_dim = 1 if self.use_edge_weight else None
        return GATv2Conv(
            self.hidden_dim, self.hidden_dim, heads=self.heads, concat=False, dropout=self.dropout_rate, edge_dim=edge_dim
        )


@register_refiner("transformer")
class TransformerRefiner(_EdgeAttrRefiner):
    """Graph transformer convolution (Shi et al. 2021); heads are averaged."""

    def build_layer(self) -> nn.Module:
        edge_dim = 1 if self.use_edge_weight else None
        return TransformerConv(
            self.hidden_dim, self.hidden_dim, heads=self.heads, concat=False, dropout=self.dropout_rate, edge_dim=edge_dim
        )


@register_refiner("gcn")
class GCNRefiner(Refiner):
    """Graph convolution (GCN, Kipf and Welling 2017) with symmetric normalisation."""

    supports_edge_weight = True

    def build_layer(self) -> nn.Module:
        return GCNConv(self.hidden_dim, self.hidden_dim)


@register_refiner("sage")
class SAGERefiner(Refiner):
    """GraphSAGE with mean aggregation (Hamilton et al. 2017); ignores edge weights."""

    def build_layer(self) -> nn.Module:
        return SAGEConv(self.hidden_dim, self.hidden_dim)
