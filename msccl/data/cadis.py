"""CaDIS, cataract surgery frames (Grammatikopoulou et al., 2021), tasks 1-3 (docs/method.md C1).

    root/Video01/Images/Video1_frame000090.png
    root/Video01/Labels/Video1_frame000090.png      (single-channel raw ids 0..35)

Folders are zero-padded ("Video01"), file names are not ("Video1_"). Splits are sets of videos. Each
task maps the 36 raw classes to its own train ids; task 1 has no ignore, tasks 2 and 3 ignore some.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from msccl.data.base import (
    FileSegmentation,
    LabelMap,
    Pair,
    Transform,
    distinct_palette,
    missing_folders,
    pair_files,
)
from msccl.data.datamodule import FileDataModule

__all__ = [
    "CADIS_CLASS_GROUPS",
    "CADIS_RAW_CLASSES",
    "CADIS_TASK_CLASSES",
    "CADIS_VIDEO_SPLITS",
    "CaDIS",
    "CaDISSegmentation",
]

CADIS_RAW_CLASSES = (
    "Pupil", "Surgical Tape", "Hand", "Eye Retractors", "Iris", "Skin", "Cornea",
    "Hydrodissection Cannula", "Viscoelastic Cannula", "Capsulorhexis Cystotome", "Rycroft Cannula",
    "Bonn Forceps", "Primary Knife", "Phacoemulsifier Handpiece", "Lens Injector", "I/A Handpiece",
    "Secondary Knife", "Micromanipulator", "I/A Handpiece Handle", "Capsulorhexis Forceps",
    "Rycroft Cannula Handle", "Phaco Handpiece Handle", "Capsulorhexis Cystotome Handle",
    "Secondary Knife Handle", "Lens Injector Handle", "Suture Needle", "Needle Holder", "Charleux Cannula",
    "Primary Knife Handle", "Vitrectomy Handpiece", "Mendez Ring", "Marker",
    "Hydrodissection Cannula Handle", "Troutman Forceps", "Cotton", "Iris Hooks",
)  # fmt: skip

_ANATOMY = tuple((CADIS_RAW_CLASSES[k], (k,)) for k in range(7))

# Each task: (train class name, the raw ids it merges) in train-id order; raw ids not listed are ignored.
CADIS_TASK_CLASSES: dict[int, tuple[tuple[str, tuple[int, ...]], ...]] = {
    1: (*_ANATOMY, ("Instrument", tuple(range(7, 36)))),
    2: (
        *_ANATOMY,
        ("Cannula", (7, 8, 10, 20, 27, 32)),
        ("Capsulorhexis Cystotome", (9, 22)),
        ("Tissue Forceps", (11, 33)),
        ("Primary Knife", (12, 28)),
        ("Phaco Handpiece", (13, 21)),
        ("Lens Injector", (14, 24)),
        ("I/A Handpiece", (15, 18)),
        ("Secondary Knife", (16, 23)),
        ("Micromanipulator", (17,)),
        ("Capsulorhexis Forceps", (19,)),
    ),
    3: tuple((CADIS_RAW_CLASSES[k], (k,)) for k in range(25)),
}

# Class groups the CaDIS papers report mIoU over, by task.
CADIS_CLASS_GROUPS: dict[int, dict[str, tuple[int, ...]]] = {
    task: {
        "anatomy": tuple(range(7)),
        "instruments": tuple(range(7, len(classes))),
        "rare": {1: (2,), 2: (9, 10, 12, 14, 16), 3: (11, 12, 14, 16, 18, 19, 20, 21, 22, 23, 24)}[task],
    }
    for task, classes in CADIS_TASK_CLASSES.items()
}

CADIS_VIDEO_SPLITS: dict[str, tuple[int, ...]] = {
    "train": (1, 3, 4, 6, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21, 23, 24, 25),
    "val": (5, 7, 16),
    "test": (2, 12, 22),
}

# one colour per raw class; a task's class takes the colour of its first raw class
_RAW_PALETTE = distinct_palette(len(CADIS_RAW_CLASSES))


def cadis_classes(task: int) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """Class names and palette of a task."""
    if task not in CADIS_TASK_CLASSES:
        raise ValueError(f"CaDIS task must be 1, 2 or 3, got {task}")
    classes = CADIS_TASK_CLASSES[task]
    return tuple(name for name, _ in classes), tuple(_RAW_PALETTE[raw_ids[0]] for _, raw_ids in classes)


class CaDISSegmentation(FileSegmentation):
    """CaDIS frames of the split's videos, labels mapped for `task` (1, 2 or 3).

    Args:
        videos: the split's video numbers (default: `CADIS_VIDEO_SPLITS[split]`).
    """

    name = "cadis"
    splits = ("train", "val", "test")

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        strict: bool = True,
        task: int = 1,
        videos: Sequence[int] | None = None,
    ) -> None:
        self.class_names, self.palette = cadis_classes(task)
        self.task = task
        self.videos = tuple(CADIS_VIDEO_SPLITS[split] if videos is None else videos)
        self.label_map = LabelMap(
            {raw: train for train, (_, raw_ids) in enumerate(CADIS_TASK_CLASSES[task]) for raw in raw_ids},
            range(len(CADIS_RAW_CLASSES)),
        )
        super().__init__(root, split, transform, strict)

    @property
    def check_options(self) -> str:
        return f" --task {self.task}"

    def find_pairs(self, split: str) -> tuple[list[Pair], list[str]]:
        pairs, problems = [], []
        for video in self.videos:
            folder = self.root / f"Video{video:02d}"
            image_dir, label_dir = folder / "Images", folder / "Labels"
            missing = missing_folders(image_dir, label_dir)
            if missing:
                problems += missing
                continue
            video_pairs, video_problems = pair_files(
                sorted(image_dir.glob(f"Video{video}_*.png")),
                lambda image, label_dir=label_dir: label_dir / image.name,
                labels_found=label_dir.glob(f"Video{video}_*.png"),
            )
            pairs += video_pairs
            problems += video_problems
        return pairs, problems


class CaDIS(FileDataModule):
    """CaDIS from `root` (the folder holding `Video01` ... `Video25`) for `task` 1, 2 or 3.

    The paper released no CaDIS recipe: crop 512x512 is msccl's choice. `repeat_factor_threshold:
    0.15` turns on repeat-factor sampling for rare instruments (Pissas et al., MICCAI 2021).

    Args:
        task: 1 (8 classes), 2 (17) or 3 (25).
        train_videos: video numbers of the training split.
        val_videos: video numbers of the validation split.
        test_videos: video numbers of the test split.
    """

    dataset_class = CaDISSegmentation

    def __init__(
        self,
        root: str,
        task: Literal[1, 2, 3] = 1,
        train_videos: tuple[int, ...] = CADIS_VIDEO_SPLITS["train"],
        val_videos: tuple[int, ...] = CADIS_VIDEO_SPLITS["val"],
        test_videos: tuple[int, ...] = CADIS_VIDEO_SPLITS["test"],
        crop_size: int | tuple[int, int] = 512,
        **kwargs,
    ) -> None:
        super().__init__(root, crop_size=crop_size, **kwargs)
        self.class_names, self.palette = cadis_classes(task)
        self.task = task
        self.videos = {"train": tuple(train_videos), "val": tuple(val_videos), "test": tuple(test_videos)}
        for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
            if shared := set(self.videos[first]) & set(self.videos[second]):
                raise ValueError(f"CaDIS videos {sorted(shared)} are in both the {first} and {second} splits")
        self.class_groups = CADIS_CLASS_GROUPS[task]

    def make_dataset(self, split: str, transform: Transform) -> CaDISSegmentation:
        return CaDISSegmentation(self.root, split, transform, task=self.task, videos=self.videos[split])
