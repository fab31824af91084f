"""Segmentation networks with announced multi-scale taps, looked up by name."""

from msccl.models.base import SegmentationNet, SegmentationOutput, Tap
from msccl.models.deeplab import DeepLabV3, DeepLabV3Plus
from msccl.models.fpn import FPN
from msccl.models.hrnet import HRNet
from msccl.models.ocrnet import OCRNet
from msccl.models.registry import NetBuilder, available, get, register
from msccl.models.segformer import Segformer
from msccl.models.unet import Unet
from msccl.models.upernet import UPerNet
from msccl.models.weights import Pretrained, PretrainedWeightsNotFound

__all__ = [
    "DeepLabV3",
    "DeepLabV3Plus",
    "FPN",
    "HRNet",
    "NetBuilder",
    "OCRNet",
    "Pretrained",
    "PretrainedWeightsNotFound",
    "SegmentationNet",
    "SegmentationOutput",
    "Segformer",
    "Tap",
    "UPerNet",
    "Unet",
    "available",
    "get",
    "register",
]
