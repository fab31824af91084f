"""Tiny dataset trees in each publisher's exact layout and file naming, for the data tests.

Images are 32x64 noise; labels are 4x4 blocks of real raw ids (ignored ones included), different per
file, so every mapping entry is exercised. Each writer returns the tree's samples per split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.conftest import REPO

HEIGHT, WIDTH = 32, 64
CONF_DATA = REPO / "conf" / "data"


@dataclass
class TreeSample:
    image: Path
    label: Path
    raw: np.ndarray  # the raw label as written


@dataclass
class Tree:
    """A tree being written. `shape`, `block` and `label_ids` change the files' size, the labels' block size
    and the raw ids they cycle through (default: every id of the dataset, 4x4 blocks of a 32x64 file)."""

    root: Path
    samples: dict[str, list[TreeSample]] = field(default_factory=dict)
    _count: int = 0
    shape: tuple[int, int] = (HEIGHT, WIDTH)
    block: int | tuple[int, int] = 4
    label_ids: list[int] | None = None

    def add(self, split: str, image: Path, label: Path, raw_ids: list[int]) -> TreeSample:
        """Write a noise image and a block label cycling through `raw_ids` (offset per file)."""
        rng = np.random.default_rng(self._count)
        height, width = self.shape
        ids = np.asarray(self.label_ids or raw_ids, np.uint8)
        block = (self.block, self.block) if isinstance(self.block, int) else self.block
        blocks = np.resize(np.roll(ids, -7 * self._count), (height // block[0], width // block[1]))
        raw = np.kron(blocks, np.ones(block, np.uint8))
        self._count += 1
        write_image(image, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        write_image(label, raw)
        sample = TreeSample(image, label, raw)
        self.samples.setdefault(split, []).append(sample)
        return sample

    def first(self, split: str = "train") -> TreeSample:
        return self.samples[split][0]

    def pairs(self, split: str) -> list[tuple[Path, Path]]:
        """(image, label) of the split, sorted."""
        return sorted((sample.image, sample.label) for sample in self.samples[split])

    def raw_label(self, image: Path) -> np.ndarray:
        """The raw label written for `image`."""
        return next(s.raw for samples in self.samples.values() for s in samples if s.image == image)


def write_image(path: Path, array: np.ndarray) -> None:
    """PNG or JPEG (by suffix) of an RGB or single-channel uint8 array; JPEGs at quality 95."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
    assert cv2.imwrite(str(path), array, params)


def cityscapes_tree(root: Path, counts: dict[str, int] | None = None, **layout: Any) -> Tree:
    """leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png + gtFine/..._gtFine_labelIds.png."""
    tree = Tree(root, **layout)
    raw_ids = [*range(34), 255]  # every labelId, and the license plate's -1 as stored in 8 bits
    cities = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau"), "test": ("berlin", "bonn")}
    for split, count in (counts or {"train": 4, "val": 2, "test": 1}).items():
        for index in range(count):
            city = cities[split][index % 2]
            stem = f"{city}_{index:06d}_{19 + index:06d}"
            tree.add(
                split,
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                raw_ids,
            )
            # the other files of the official release sit next to the ones msccl reads
            write_image(
                root / "gtFine" / split / city / f"{stem}_gtFine_color.png", np.zeros((4, 4, 3), np.uint8)
            )
            write_image(
                root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", np.zeros((4, 4), np.uint8)
            )
    return tree


def ade20k_tree(root: Path, counts: dict[str, int] | None = None, **layout: Any) -> Tree:
    """ADEChallengeData2016/images/{training,validation}/ADE_*.jpg + annotations/.../ADE_*.png."""
    tree = Tree(root, **layout)
    base = root / "ADEChallengeData2016"
    for split, folder, prefix in (("train", "training", "ADE_train"), ("val", "validation", "ADE_val")):
        for index in range(1, (counts or {"train": 4, "val": 2})[split] + 1):
            name = f"{prefix}_{index:08d}"
            tree.add(
                split,
                base / "images" / folder / f"{name}.jpg",
                base / "annotations" / folder / f"{name}.png",
                list(range(151)),
            )
    (base / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n")
    (base / "sceneCategories.txt").write_text("ADE_train_00000001 airport_terminal\n")
    return tree


def pascal_context_tree(root: Path, counts: dict[str, int] | None = None) -> Tree:
    """VOCdevkit/VOC2010/JPEGImages/*.jpg, SegmentationClassContext/*.png, ImageSets/SegmentationContext."""
    tree = Tree(root)
    voc = root / "VOCdevkit" / "VOC2010"
    for split, first in (("train", 2008), ("val", 2009)):
        names = [f"{first}_{index:06d}" for index in range(1, (counts or {"train": 4, "val": 2})[split] + 1)]
        for name in names:
            tree.add(
                split,
                voc / "JPEGImages" / f"{name}.jpg",
                voc / "SegmentationClassContext" / f"{name}.png",
                [*range(60)],
            )
        split_file = voc / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text("".join(f"{name}\n" for name in names))
    # VOC2010 holds many more images than PASCAL-Context labels: they must be left alone
    write_image(voc / "JPEGImages" / "2010_000001.jpg", np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    return tree


def pascal_context_split_folders_tree(root: Path) -> Tree:
    """The original code's variant: {train,val}/image/<stem>.jpg with {train,val}/label/<stem>.png."""
    tree = Tree(root)
    for split, count in (("train", 3), ("val", 2)):
        for index in range(count):
            stem = f"2008_{index:06d}" if split == "train" else f"2009_{index:06d}"
            tree.add(
                split,
                root / split / "image" / f"{stem}.jpg",
                root / split / "label" / f"{stem}.png",
                [*range(60)],
            )
    return tree


def cadis_tree(root: Path, frames_per_video: dict[int, int] | None = None, **layout: Any) -> Tree:
    """Video01 ... Video25, each with Images/VideoN_frameNNNNNN.png and Labels/ of the same name."""
    from msccl.data.cadis import CADIS_VIDEO_SPLITS

    tree = Tree(root, **layout)
    frames_per_video = frames_per_video or {video: 1 for video in range(1, 26)}
    split_of = {video: split for split, videos in CADIS_VIDEO_SPLITS.items() for video in videos}
    for video, frames in frames_per_video.items():
        for frame in range(frames):
            name = f"Video{video}_frame{90 * (frame + 1):06d}.png"
            folder = root / f"Video{video:02d}"
            tree.add(split_of[video], folder / "Images" / name, folder / "Labels" / name, list(range(36)))
    return tree


def tiny_fit_args(data_config: str, root: Path, *extra: str) -> list[str]:
    """`msccl fit` arguments: the demo's model shrunk (channels 32) on a data config, 2 steps."""
    from tests.conftest import SYNTHETIC_CONFIG

    return [
        "fit",
        f"--config={SYNTHETIC_CONFIG}",
        f"--config={CONF_DATA / data_config}",
        f"--data.init_args.root={root}",
        "--data.init_args.crop_size=[32, 32]",
        "--data.init_args.batch_size=2",
        "--data.init_args.val_batch_size=2",
        "--data.init_args.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--model.init_args.net.init_args.pyramid_channels=32",
        "--model.init_args.net.init_args.segmentation_channels=32",
        *extra,
    ]


def truncate(path: Path) -> None:
    """Cut a file to two thirds, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def expected_train_ids(raw: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Train ids of a raw label from a {raw id: train id} table (ids not in it: ignore 255)."""
    lookup = np.full(256, 255, np.uint8)
    for raw_id, train_id in table.items():
        lookup[raw_id] = train_id
    return lookup[raw]
