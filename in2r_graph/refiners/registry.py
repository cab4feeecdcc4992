"""Name-based registry of refiners.

Names are matched leniently: case, dashes and underscores are ignored, so
``GATv2``, ``gat-v2`` and ``gat_v2`` all resolve to the ``gatv2`` entry.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from torch import nn

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[nn.Module]] = {}
_DISPLAY_NAMES: dict[str, str] = {}


def _normalise(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def register_refiner(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a refiner class under ``name`` (class decorator).

    Registering a name twice replaces the earlier entry with a warning, so a
    user module can override a built-in refiner on purpose.

    Example::

        @register_refiner("my-refiner")
        class MyRefiner(Refiner):
            def build_layer(self):
                return torch_geometric.nn.GraphConv(self.hidden_dim, self.hidden_dim)
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        key = _normalise(name)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            logger.warning("refiner %r is registered again; %s replaces %s", name, cls.__name__, _REGISTRY[key].__name__)
        _REGISTRY[key] = cls
        _DISPLAY_NAMES[key] = name
        cls.registry_name = name
        return cls

    return decorator


def list_refiners() -> list[str]:
    """Return the registered refiner names, sorted."""
    return sorted(_DISPLAY_NAMES.values())


def get_refiner_class(name: str) -> type[nn.Module]:
    """Return the class registered under ``name``; raise ``ValueError`` listing the choices."""
    key = _normalise(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown refiner {name!r}; registered refiners: {', '.join(list_refiners())}")
    return _REGISTRY[key]


def build_refiner(refiner: str | nn.Module, dim: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a refiner by name, or pass an already built module through.

    Args:
        refiner: a registered name or an ``nn.Module`` instance.
        dim: embedding size of the nodes and of the returned prototypes.
        **kwargs: keyword arguments of the refiner class (``num_layers``,
            ``hidden_dim``, ``heads``, ``dropout``, ``readout``,
            ``use_edge_weight``).
    """
    if isinstance(refiner, nn.Module):
        return refiner
    if not isinstance(refiner, str):
        raise TypeError(f"refiner must be a name or an nn.Module; got {type(refiner).__name__}")
    if dim is None:
        raise ValueError(f"building refiner {refiner!r} by name needs dim, the embedding size")
    return get_refiner_class(refiner)(dim, **kwargs)
