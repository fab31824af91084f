"""Architectures by name, for code that picks one by name: `available()` lists them (the benchmarks'
choices, the docs), `get` finds one case-insensitively (benchmarks, tests). Configs do not use it: they
name the class by its import path (`class_path: msccl.models.FPN`), which jsonargparse imports."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from msccl.models.base import SegmentationNet

__all__ = ["NetBuilder", "available", "get", "register"]

_REGISTRY: dict[str, type[SegmentationNet]] = {}
_Net = TypeVar("_Net", bound=type[SegmentationNet])


def register(cls: _Net) -> _Net:
    """Class decorator: make an architecture available under its class name."""
    if cls.__name__ in _REGISTRY:
        raise KeyError(f"architecture {cls.__name__!r} is registered twice")
    _REGISTRY[cls.__name__] = cls
    return cls


def available() -> list[str]:
    """The registered architectures' class names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[SegmentationNet]:
    """Look an architecture up by name, case-insensitively."""
    by_lower = {key.lower(): cls for key, cls in _REGISTRY.items()}
    try:
        return by_lower[name.lower()]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; available: {', '.join(available())}") from None


NetBuilder = Callable[[int], SegmentationNet]
"""What the training module takes: a class (or partial) that builds a network given `num_classes`."""
