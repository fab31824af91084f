"""What every msccl dataset yields, and the helpers that build it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["IGNORE_INDEX", "Sample", "Transform", "to_sample", "read_image", "ImageFolder"]

IGNORE_INDEX = 255
"""The one ignore id: labels travel as train ids with 255 = ignore, from the dataset file to the loss."""

Sample = dict[str, Any]
"""{"image": float [3, H, W], "label": int64 [H, W] (absent when predicting), "name": str}."""

Transform = Callable[..., dict[str, Any]]
"""An albumentations-style callable: `transform(image=..., mask=...)` returns a dict of the same keys."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def to_sample(image: np.ndarray, label: np.ndarray | None, name: str, transform: Transform | None) -> Sample:
    """Apply `transform` (default: ImageNet normalisation) and convert to tensors."""
    from msccl.data.transforms import eval_transform

    transform = transform or eval_transform()
    if label is None:
        out = transform(image=image)
        return {"image": out["image"], "name": name}
    out = transform(image=image, mask=label)
    return {"image": out["image"], "label": torch.as_tensor(out["mask"]).long(), "name": name}


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 image; a clear error naming the file when it is missing or cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read image {path}: missing, unreadable or not an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageFolder(Dataset):
    """Every image in a folder (sorted by name), without labels: for `msccl predict`."""

    def __init__(self, root: str | Path, transform: Transform | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"predict folder {self.root} does not exist")
        self.paths = sorted(p for p in self.root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.root}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        """The sample, plus its file's "path" (prediction writers read the original image from it)."""
        path = self.paths[index]
        return {**to_sample(read_image(path), None, path.stem, self.transform), "path": str(path)}
