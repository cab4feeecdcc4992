"""Base class of the graph refiners: layer loop, residual, norm, readout."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import global_mean_pool
from torch_geometric.nn.aggr import AttentionalAggregation

from .registry import get_refiner_class, list_refiners

READOUTS = ("mean", "attention", "query")


class Refiner(nn.Module):
    """Map a batch of neighbourhood graphs to one L2-normalised prototype each.

    The base class owns everything but the message-passing operator: an
    optional input projection, ``num_layers`` rounds of
    ``h = LayerNorm(h + dropout(act(layer(h))))``, an optional output
    projection, the readout and the final L2 normalisation. A subclass
    implements :meth:`build_layer` and, when its operator has another call
    signature, :meth:`apply_layer`; it sets :attr:`supports_edge_weight` when
    it can use the batch's ``edge_weight``.

    Args:
        dim: size of the node embeddings and of the prototypes.
        hidden_dim: size of the node states inside the layers. Default: ``None``,
            which means ``dim``; another size adds linear input and output
            projections.
        num_layers: message-passing rounds. Default: 1.
        heads: attention heads, for operators that have them (attention, gat,
            gatv2, transformer); the other operators ignore it. Default: 4.
        dropout: dropout probability on each layer's update, in ``[0, 1)``.
            Default: 0.1.
        readout: ``mean`` over neighbour nodes, ``attention`` pooling over
            neighbour nodes, or ``query`` (the query node's final state, which
            needs graphs built with ``query_node=True``). Default: ``mean``.
        use_edge_weight: pass ``edge_weight`` to the operator. Default: False.

    Raises:
        ValueError: if a size or probability is out of range, the readout is
            unknown, or ``use_edge_weight`` is set on a refiner whose operator
            cannot use edge weights.

    Shapes:
        input: a :class:`torch_geometric.data.Batch` of ``B`` graphs with node
        features ``x`` (N, dim); output: (B, dim).
    """

    supports_edge_weight: ClassVar[bool] = False
    activation: ClassVar[bool] = True
    registry_name: ClassVar[str] = ""

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int | None = None,
        num_layers: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
        readout: str = "mean",
        use_edge_weight: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim={dim} is invalid; expected a positive embedding size")
        if num_layers < 0:
            raise ValueError(f"num_layers={num_layers} is invalid; expected 0 or more")
        if hidden_dim is not None and hidden_dim < 1:
            raise ValueError(f"hidden_dim={hidden_dim} is invalid; expected a positive size or None for dim")
        if heads < 1:
            raise ValueError(f"heads={heads} is invalid; expected 1 or more")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} is invalid; expected a probability in [0, 1)")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; expected one of {', '.join(READOUTS)}")
        if use_edge_weight and not self.supports_edge_weight:
            raise ValueError(
                f"refiner {self.display_name()!r} cannot use edge weights; set edge_weights to 'none' or choose "
                f"a refiner that supports them ({', '.join(edge_weight_refiners())})"
            )
        self.dim = dim
        self.hidden_dim = hidden_dim or dim
        self.num_layers = num_layers
        self.heads = heads
        self.dropout_rate = dropout
        self.readout_name = readout
        self.use_edge_weight = use_edge_weight

        self.input_proj = nn.Linear(dim, self.hidden_dim) if self.hidden_dim != dim else nn.Identity()
        self.layers = nn.ModuleList([self.build_layer() for _ in range(num_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(self.hidden_dim) for _ in range(num_layers)])
        self.dropout = nn.Dropout(dropout)
        self.output_proj = nn.Linear(self.hidden_dim, dim) if self.hidden_dim != dim else nn.Identity()
        self.pool = AttentionalAggregation(nn.Linear(dim, 1)) if readout == "attention" else None

    def build_layer(self) -> nn.Module:
        """Return one message-passing operator mapping hidden_dim to hidden_dim."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_layer()")

    def apply_layer(self, layer: nn.Module, x: Tensor, batch: Batch, edge_weight: Tensor | None) -> Tensor:
        """Run one operator; the default passes ``(x, edge_index[, edge_weight])``."""
        if edge_weight is None:
            return layer(x, batch.edge_index)
        return layer(x, batch.edge_index, edge_weight)

    def node_states(self, batch: Batch) -> Tensor:
        """Return the final node states ``(N, dim)`` before the readout."""
        edge_weight = batch.edge_weight if self.use_edge_weight else None
        if self.use_edge_weight and edge_weight is None:
            raise ValueError("use_edge_weight=True but the graph batch has no edge_weight; build it with edge weights")
        hidden = self.input_proj(batch.x)
        for layer, norm in zip(self.layers, self.norms):
            update = self.apply_layer(layer, hidden, batch, edge_weight)
            if self.activation:
                update = F.gelu(update)
            hidden = norm(hidden + self.dropout(update))
        return self.output_proj(hidden)

    def readout(self, states: Tensor, batch: Batch) -> Tensor:
        """Pool node states into one vector per graph ``(B, dim)``."""
        num_graphs = batch.num_graphs
        if self.readout_name == "query":
            if batch.query_index is None or bool((batch.query_index < 0).any()):
                raise ValueError("readout='query' needs graphs built with query_node=True")
            return states[batch.query_index]
        neighbours = ~batch.is_query
        if self.readout_name == "attention":
            return self.pool(states[neighbours], index=batch.batch[neighbours], dim_size=num_graphs)
        return global_mean_pool(states[neighbours], batch.batch[neighbours], size=num_graphs)

    def forward(self, batch: Batch) -> Tensor:
        return F.normalize(self.readout(self.node_states(batch), batch), dim=-1)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, hidden_dim={self.hidden_dim}, num_layers={self.num_layers}, "
            f"readout={self.readout_name!r}, use_edge_weight={self.use_edge_weight}"
        )

    @classmethod
    def display_name(cls) -> str:
        """Return the registry name, or the class name of an unregistered refiner."""
        return cls.registry_name or cls.__name__


class ParameterFreeRefiner(Refiner):
    """A refiner without layers: subclasses override :meth:`forward` only.

    The refiner itself pools the neighbours, so ``mean`` is the only accepted
    readout. ``num_layers``, ``hidden_dim``, ``heads`` and ``dropout`` are
    accepted and ignored, so one set of settings builds every registered refiner.
    """

    def __init__(self, dim: int, **kwargs) -> None:
        readout = kwargs.get("readout", "mean")
        if readout != "mean":
            raise ValueError(
                f"refiner {self.display_name()!r} pools the neighbours itself and has no node states to read out; "
                f"readout={readout!r} is invalid, expected 'mean'"
            )
        kwargs["num_layers"] = 0
        kwargs.pop("hidden_dim", None)
        super().__init__(dim, **kwargs)

    def build_layer(self) -> nn.Module:
        raise AssertionError("parameter-free refiners have no layers")

    def neighbour_view(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Return neighbour features ``(B, k, dim)`` and scores ``(B, k)``."""
        neighbours = ~batch.is_query
        num_graphs = batch.num_graphs
        features = batch.x[neighbours].view(num_graphs, -1, batch.x.size(-1))
        scores = batch.score[neighbours].view(num_graphs, -1)
        return features, scores

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def edge_weight_refiners() -> list[str]:
    """Return the registered refiner names whose operators can use edge weights."""
    return [name for name in list_refiners() if getattr(get_refiner_class(name), "supports_edge_weight", False)]


def torch_dense_mask(batch: Batch, nodes: int) -> Tensor:
    """Return a boolean ``(B, n, n)`` mask: True where node ``i`` may attend to ``j``.

    The mask contains the batch's edges (target attends to source) plus self loops.
    """
    num_graphs = batch.num_graphs
    device = batch.x.device
    mask = torch.eye(nodes, dtype=torch.bool, device=device).repeat(num_graphs, 1, 1)
    source, target = batch.edge_index
    graph = batch.batch[target]
    local_source = source - batch.ptr[graph]
    local_target = target - batch.ptr[graph]
    mask[graph, local_target, local_source] = True
    return mask
