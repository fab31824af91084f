"""Segmentation networks with announced multi-scale taps, looked up by name."""

from msccl.models import fpn  # noqa: F401  (registers FPN)
from msccl.models.base import SegmentationNet, SegmentationOutput, Tap
from msccl.models.fpn import FPN
from msccl.models.registry import NetBuilder, available, build, get, register

__all__ = [
    "FPN",
    "NetBuilder",
    "SegmentationNet",
    "SegmentationOutput",
    "Tap",
    "available",
    "build",
    "get",
    "register",
]
