"""`msccl data example`'s dataset: the built-in synthetic images written as a folder dataset to copy.

A complete tree in the layout of `msccl.data.folder`, with its `classes.yaml` (`msccl.data.class_table`),
so a user starts from one that checks and trains, and the documentation walks through real files.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from msccl.data.base import DatasetError
from msccl.data.class_table import CLASSES_FILE
from msccl.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SyntheticSegmentation

__all__ = ["write_example_tree"]


def write_example_tree(root: str | Path, num_train: int = 16, num_val: int = 4, image_size: int = 64) -> Path:
    """Write the built-in synthetic dataset as a folder dataset under `root` (which must not exist or be
    empty): images/{train,val}/*.png, 8-bit id labels/{train,val}/*.png and its classes.yaml. A tree to
    copy, and the data of the "Your own data" walk-through (docs/datasets.md)."""
    root = Path(root).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root} exists and is not an empty folder: give a new folder for the example")
    for split, count, seed in (("train", num_train, 0), ("val", num_val, 1)):
        dataset = SyntheticSegmentation(count, image_size, seed=seed)
        for folder in ("images", "labels"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, label = dataset.generate(index)
            name = f"{split}_{index:04d}.png"
            _write_png(root / "images" / split / name, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            _write_png(root / "labels" / split / name, label)
    lines = [
        "# label value -> class; train ids are the order of `classes`",
        "ignore_values: [255]",
        "classes:",
    ]
    for value, (spec, colour) in enumerate(zip(SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, strict=True)):
        lines.append(f"  - {{value: {value}, name: {spec.name}, color: {list(colour)}}}")
    (root / CLASSES_FILE).write_text("\n".join(lines) + "\n")
    return root


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")
