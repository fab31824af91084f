"""Lightning side of msccl: the training module, metrics, optimisation and callbacks."""

from msccl.training.callbacks import ContrastiveWeightSchedule
from msccl.training.metrics import SegmentationIoU
from msccl.training.module import ContrastiveLossBuilder, SegmentationModule

__all__ = ["ContrastiveLossBuilder", "ContrastiveWeightSchedule", "SegmentationIoU", "SegmentationModule"]
