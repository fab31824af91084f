"""Datasets (plain torch Datasets) and the LightningDataModules that load them."""

from msccl.data.base import IGNORE_INDEX, ImageFolder
from msccl.data.datamodule import SegmentationDataModule, SyntheticDataModule
from msccl.data.synthetic import SyntheticSegmentation

__all__ = [
    "IGNORE_INDEX",
    "ImageFolder",
    "SegmentationDataModule",
    "SyntheticDataModule",
    "SyntheticSegmentation",
]
