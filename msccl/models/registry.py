"""Architectures by name. Config files use the same names as `class_path` (e.g. `class_path: FPN`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from msccl.models.base import SegmentationNet

__all__ = ["register", "available", "get", "build"]

_REGISTRY: dict[str, type[SegmentationNet]] = {}
_Net = TypeVar("_Net", bound=type[SegmentationNet])


def register(cls: _Net) -> _Net:
    """Class decorator: make an architecture available under its class name."""
    if cls.__name__ in _REGISTRY:
        raise KeyError(f"architecture {cls.__name__!r} is registered twice")
    _REGISTRY[cls.__name__] = cls
    return cls


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[SegmentationNet]:
    """Look an architecture up by name, case-insensitively."""
    by_lower = {key.lower(): cls for key, cls in _REGISTRY.items()}
    try:
        return by_lower[name.lower()]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; available: {', '.join(available())}") from None


def build(name: str, num_classes: int, **kwargs) -> SegmentationNet:
    return get(name)(num_classes, **kwargs)


NetBuilder = Callable[[int], SegmentationNet]
"""What the training module takes: a class (or partial) that builds a network given `num_classes`."""
