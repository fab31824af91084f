"""Datasets (plain torch Datasets) and the LightningDataModules that load them."""

from msccl.data.ade20k import ADE20K, ADE20KSegmentation
from msccl.data.base import IGNORE_INDEX, DatasetError, FileSegmentation, ImageFolder, LabelMap
from msccl.data.cadis import CaDIS, CaDISSegmentation
from msccl.data.cityscapes import Cityscapes, CityscapesSegmentation
from msccl.data.datamodule import FileDataModule, SegmentationDataModule, SyntheticDataModule
from msccl.data.folder import FolderSegmentation, LabelledFolder
from msccl.data.pascal_context import PascalContext, PascalContextSegmentation
from msccl.data.synthetic import SyntheticSegmentation

__all__ = [
    "ADE20K",
    "IGNORE_INDEX",
    "ADE20KSegmentation",
    "CaDIS",
    "CaDISSegmentation",
    "Cityscapes",
    "CityscapesSegmentation",
    "DatasetError",
    "FileDataModule",
    "FileSegmentation",
    "FolderSegmentation",
    "ImageFolder",
    "LabelMap",
    "LabelledFolder",
    "PascalContext",
    "PascalContextSegmentation",
    "SegmentationDataModule",
    "SyntheticDataModule",
    "SyntheticSegmentation",
]
