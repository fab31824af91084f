"""Image/label pipelines (albumentations). Masks are only ever moved with nearest neighbour and padded
with the ignore id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from msccl.labels import IGNORE_INDEX

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Augmentation",
    "ClassRatioRandomCrop",
    "RandomRescale",
    "denormalise",
    "eval_transform",
    "flip_transform",
    "largest_class_share",
    "seed_pipeline",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomRescale(A.DualTransform):
    """Resize by s ~ U[scale_range]; the width additionally by a ~ U[aspect_range].

    The image is resized bilinearly, the mask with nearest neighbour (no new label values). The mask uses
    OpenCV's centre-aligned INTER_NEAREST_EXACT: plain INTER_NEAREST (albumentations' and mmseg's
    default) samples floor(x / s), up to half a source pixel away from where INTER_LINEAR samples, so
    labels drift against the image.
    """

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.5, 2.0),
        aspect_range: tuple[float, float] = (0.9, 1.1),
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        for name, (low, high) in (("scale_range", scale_range), ("aspect_range", aspect_range)):
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        self.scale_range = tuple(scale_range)
        self.aspect_range = tuple(aspect_range)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(*self.scale_range)
        aspect = self.py_random.uniform(*self.aspect_range)
        return {"size": (max(1, round(height * scale)), max(1, round(width * scale * aspect)))}

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, size[::-1], interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale_range", "aspect_range")


def largest_class_share(mask: np.ndarray, ignore_index: int = IGNORE_INDEX) -> float:
    """Share of the most frequent class among the non-ignore pixels (1.0 with fewer than two classes)."""
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[ignore_index] = 0
    if np.count_nonzero(counts) < 2:
        return 1.0
    return float(counts.max() / counts.sum())


class ClassRatioRandomCrop(A.RandomCrop):
    """Random crop that retries (up to `max_attempts` draws) until no single class covers
    `max_class_ratio` or more of the crop's labelled pixels, keeping the last draw otherwise
    (the paper's recipe; mmsegmentation's `cat_max_ratio`). Ignore pixels do not count.

    The input must be at least the crop size: pad first (`A.PadIfNeeded` with `fill_mask=255`).
    """

    def __init__(
        self,
        height: int,
        width: int,
        max_class_ratio: float = 0.75,
        max_attempts: int = 10,
        ignore_index: int = IGNORE_INDEX,
        p: float = 1.0,
    ) -> None:
        super().__init__(height=height, width=width, p=p)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.max_class_ratio = max_class_ratio
        self.max_attempts = max_attempts
        self.ignore_index = ignore_index

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data.get("mask")
        for _ in range(self.max_attempts):
            crop = super().get_params_dependent_on_data(params, data)
            if mask is None:
                return crop
            x_min, y_min, x_max, y_max = crop["crop_coords"]
            if largest_class_share(mask[y_min:y_max, x_min:x_max], self.ignore_index) < self.max_class_ratio:
                break
        return crop

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "max_class_ratio", "max_attempts", "ignore_index")


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    return [A.Normalize(mean=mean, std=std), ToTensorV2()]


@dataclass(frozen=True)
class Augmentation:
    """The settings of `train_transform`; the defaults are the paper's.

    A file data module's `augmentation` config key (`data.init_args.augmentation.scale_range=[0.75,1.5]`).

    Args:
        scale_range: random rescale factor range.
        aspect_range: extra factor range of the width (aspect jitter).
        max_class_ratio: the crop retries until no class covers this share of its labelled pixels.
        crop_attempts: crop draws before keeping the last one.
        flip_probability: horizontal flip probability.
        colour_jitter: brightness/contrast/saturation factor range (None: no colour jitter).
        hue_shift: hue jitter range +-.
    """

    scale_range: tuple[float, float] = (0.5, 2.0)
    aspect_range: tuple[float, float] = (0.9, 1.1)
    max_class_ratio: float = 0.75
    crop_attempts: int = 10
    flip_probability: float = 0.5
    colour_jitter: tuple[float, float] | None = (2 / 3, 1.5)
    hue_shift: float = 0.05


def train_transform(
    crop_size: tuple[int, int],
    augmentation: Augmentation | None = None,
    ignore_index: int = IGNORE_INDEX,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """The paper's training pipeline (docs/method.md C3): rescale with aspect jitter, pad (label with
    ignore), class-ratio random crop, horizontal flip, colour jitter, ImageNet normalisation.

    `crop_size` is (height, width); `augmentation` the settings of the steps (default: the paper's).
    """
    augmentation = augmentation or Augmentation()
    height, width = crop_size
    steps: list[A.BasicTransform] = [
        RandomRescale(augmentation.scale_range, augmentation.aspect_range),
        # albumentations pads with reflection and fills masks with 0 by default: constant, ignore id
        A.PadIfNeeded(height, width, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index),
        ClassRatioRandomCrop(
            height, width, augmentation.max_class_ratio, augmentation.crop_attempts, ignore_index
        ),
        A.HorizontalFlip(p=augmentation.flip_probability),
    ]
    if augmentation.colour_jitter is not None:
        jitter = augmentation.colour_jitter
        hue = (-augmentation.hue_shift, augmentation.hue_shift)
        steps.append(A.ColorJitter(jitter, jitter, jitter, hue=hue, p=1.0))
    return A.Compose([*steps, *_normalise(mean, std)])


def eval_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """No augmentation: normalise and convert to tensors."""
    return A.Compose(_normalise(mean, std))


def flip_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Horizontal flip (p=0.5) then normalise: enough for procedurally varied data."""
    return A.Compose([A.HorizontalFlip(p=0.5), *_normalise(mean, std)])


def denormalise(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """A normalised float [3, H, W] image back to its original colours, uint8 [H, W, 3] (the inverse of
    `A.Normalize(mean, std)` with its default max_pixel_value 255, clipped to the valid range)."""
    image = image.detach().float().cpu().permute(1, 2, 0).numpy()
    restored = (image * np.asarray(std, np.float32) + np.asarray(mean, np.float32)) * 255
    return restored.round().clip(0, 255).astype(np.uint8)


def seed_pipeline(transform: A.Compose, *entropy: int) -> None:
    """Seed each step of an albumentations pipeline with its own random stream, from `entropy` (the
    training loader passes each sample's seed, see `msccl.data.sampling`).

    `A.Compose(seed=...)` gives every step the *same* seed, so their draws coincide (two flips with
    p=0.5 always agree; the rescale factor is the crop's vertical position): spawn one stream per step.
    """
    sequence = np.random.SeedSequence([value % 2**32 for value in entropy])
    transform.set_random_seed(int(sequence.generate_state(1)[0]))  # kept as `transform.seed`
    for step, stream in zip(transform.transforms, sequence.spawn(len(transform.transforms)), strict=True):
        step.set_random_seed(int(stream.generate_state(1)[0]))
