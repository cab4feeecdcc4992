"""Refiners built on PyTorch Geometric's message-passing operators."""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, SAGEConv, TransformerConv

from .base import Refiner
from .registry import register_refiner


class _EdgeAttrRefiner(Refiner):
    """Operators that take edge weights as a one-dimensional ``edge_attr``."""

    supports_edge_weight = True

    def apply_layer(self, layer: nn.Module, x: Tensor, batch: Batch, edge_weight: Tensor | None) -> Tensor:
        if edge_weight is None:
            return layer(x, batch.edge_index)
        return layer(x, batch.edge_index, edge_weight.view(-1, 1))


@register_refiner("gat")
class GATRefiner(_EdgeAttrRefiner):
    """Graph attention (GAT, Velickovic et al. 2018); heads are averaged."""

    def build_layer(self) -> nn.Module:
        edge_dim = 1 if self.use_edge_weight else None
        return GATConv(
            self.hidden_dim, self.hidden_dim, heads=self.heads, concat=False, dropout=self.dropout_rate, edge_dim=edge_dim
        )


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
