"""Graph refiners: a registry of modules mapping neighbourhood graphs to prototypes."""

from . import attention, baselines, gnn  # noqa: F401  (registers the built-in refiners)
from .base import READOUTS, ParameterFreeRefiner, Refiner
from .registry import build_refiner, get_refiner_class, list_refiners, register_refiner

__all__ = [
    "READOUTS",
    "ParameterFreeRefiner",
    "Refiner",
    "build_refiner",
    "get_refiner_class",
    "list_refiners",
    "register_refiner",
]
