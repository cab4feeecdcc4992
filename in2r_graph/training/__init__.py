"""Training: networks, the co-training loop, checkpoints and run assembly.

The public names are imported on first use, so that importing
:mod:`in2r_graph.training.checkpoint` alone does not load the trainer and
PyTorch Geometric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Public name -> submodule that defines it.
_EXPORTS = {
    "CheckpointError": ".checkpoint",
    "Network": ".network",
    "NonFiniteLossError": ".errors",
    "Trainer": ".trainer",
    "build_network": ".network",
    "encode_split": ".trainer",
    "load_checkpoint": ".checkpoint",
    "save_atomic": ".checkpoint",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, load_checkpoint, save_atomic
    from .network import Network, build_network
    from .errors import NonFiniteLossError
    from .trainer import Trainer, encode_split

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
