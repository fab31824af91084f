"""Cityscapes (Cordts et al., 2016) in its official layout, 19 evaluation classes (docs/method.md C1).

    root/leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png
    root/gtFine/{train,val,test}/<city>/<stem>_gtFine_labelIds.png

Labels are read as labelIds (0..33) and mapped to the 19 trainIds; every other id is ignore (255),
including the license plate, whose official trainId is -1 (and whose labelId -1 reads as 255 in 8 bits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msccl.data.base import FileSegmentation, LabelMap, Pair, missing_folders, pair_files
from msccl.data.datamodule import FileDataModule

__all__ = ["CITYSCAPES_CLASSES", "Cityscapes", "CityscapesSegmentation", "train_ids_to_label_ids"]

# (name, labelId, official colour) of the 19 evaluation classes in trainId order (cityscapesScripts)
CITYSCAPES_CLASSES: tuple[tuple[str, int, tuple[int, int, int]], ...] = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)
_LABEL_IDS = np.array([label_id for _, label_id, _ in CITYSCAPES_CLASSES], np.uint8)
_LICENSE_PLATE_UINT8 = 255  # labelId -1 stored in an 8-bit PNG


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map a trainId prediction back to labelIds for the evaluation server; ignore becomes 0
    (unlabeled), which the server does not score."""
    table = np.zeros(256, np.uint8)
    table[: len(_LABEL_IDS)] = _LABEL_IDS
    return table[np.asarray(train_ids, dtype=np.uint8)]


class CityscapesSegmentation(FileSegmentation):
    """Cityscapes fine annotations: one sample per `*_leftImg8bit.png` with its `*_gtFine_labelIds.png`."""

    name = "cityscapes"
    splits = ("train", "val", "test")
    class_names = tuple(name for name, _, _ in CITYSCAPES_CLASSES)
    palette = tuple(colour for _, _, colour in CITYSCAPES_CLASSES)
    label_map = LabelMap(
        {label_id: train_id for train_id, label_id in enumerate(_LABEL_IDS.tolist())},
        [*range(34), _LICENSE_PLATE_UINT8],
    )

    def find_pairs(self, split: str) -> tuple[list[Pair], list[str]]:
        image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        problems = missing_folders(image_dir, label_dir)
        if problems:
            return [], problems

        def label_for(image: Path) -> Path:
            stem = image.name.removesuffix("_leftImg8bit.png")
            return label_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"

        return pair_files(
            sorted(image_dir.glob("*/*_leftImg8bit.png")),
            label_for,
            name_for=lambda image: image.name.removesuffix("_leftImg8bit.png"),
            labels_found=label_dir.glob("*/*_gtFine_labelIds.png"),
        )


class Cityscapes(FileDataModule):
    """Cityscapes from `root` (containing `leftImg8bit/` and `gtFine/`); crop 512x1024 (the paper's recipe).

    `msccl test` evaluates `val` by default: the official test labels are placeholders.
    """

    dataset_class = CityscapesSegmentation
    class_names = CityscapesSegmentation.class_names
    palette = CityscapesSegmentation.palette

    def __init__(
        self, root: str, crop_size: int | tuple[int, int] = (512, 1024), test_split: str = "val", **kwargs
    ) -> None:
        super().__init__(root, crop_size=crop_size, test_split=test_split, **kwargs)
