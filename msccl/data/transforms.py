"""Image/label pipelines (albumentations). Masks are only ever moved with nearest neighbour."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "flip_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    return [A.Normalize(mean=mean, std=std), ToTensorV2()]


def eval_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """No augmentation: normalise and convert to tensors."""
    return A.Compose(_normalise(mean, std))


def flip_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Horizontal flip (p=0.5) then normalise: enough for procedurally varied data."""
    return A.Compose([A.HorizontalFlip(p=0.5), *_normalise(mean, std)])
