"""Training: networks, the co-training loop, checkpoints and run assembly."""

from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .network import Network, build_network
from .trainer import NonFiniteLossError, Trainer, encode_split

__all__ = [
    "CheckpointError",
    "Network",
    "NonFiniteLossError",
    "Trainer",
    "build_network",
    "encode_split",
    "load_checkpoint",
    "save_atomic",
]
