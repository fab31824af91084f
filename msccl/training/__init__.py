"""Lightning side of msccl: the training module, metrics, optimisation and callbacks."""

from msccl.training.metrics import SegmentationIoU
from msccl.training.module import SegmentationModule

__all__ = ["SegmentationIoU", "SegmentationModule"]
