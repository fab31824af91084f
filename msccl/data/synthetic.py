"""A procedural segmentation dataset that needs no download and is deterministic from a seed.

Classes are designed so that no single cue separates them: pairs share a colour and differ in texture
scale (fine vs coarse stripes), texture statistics (checker vs speckle) or shape (disc vs square), so a
network needs both local and object-scale context; "wire" objects are only 1-2 pixels wide, and
ignore-labelled noise patches stand in for unlabelled regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from torch.utils.data import Dataset

from msccl.data.base import IGNORE_INDEX, Sample, Transform, distinct_palette, to_sample

__all__ = ["SyntheticSegmentation", "SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE"]


@dataclass(frozen=True)
class _SyntheticClass:
    name: str
    colour: tuple[float, float, float]
    texture: str  # flat | stripes | checker | speckle
    period: float = 0.0
    shape: str = "blob"  # blob | disc | square | wire


SYNTHETIC_CLASSES: tuple[_SyntheticClass, ...] = (
    _SyntheticClass("background", (0.45, 0.45, 0.45), "smooth"),
    _SyntheticClass("fine_stripes", (0.2, 0.7, 0.7), "stripes", period=4),
    _SyntheticClass("coarse_stripes", (0.2, 0.7, 0.7), "stripes", period=14),
    _SyntheticClass("checker", (0.9, 0.55, 0.2), "checker", period=8),
    _SyntheticClass("speckle", (0.9, 0.55, 0.2), "speckle"),
    _SyntheticClass("disc", (0.55, 0.3, 0.75), "flat", shape="disc"),
    _SyntheticClass("square", (0.55, 0.3, 0.75), "flat", shape="square"),
    _SyntheticClass("wire", (0.95, 0.9, 0.3), "flat", shape="wire"),
)

SYNTHETIC_PALETTE = distinct_palette(len(SYNTHETIC_CLASSES))
"""The colours that show the synthetic labels (overlays, label PNGs, legends): one per class. Not the
image colours, which the classes share in pairs by design (checker and speckle, disc and square, ...)."""


class SyntheticSegmentation(Dataset):
    """`num_images` images of `image_size` pixels with `num_classes` (2..8) classes, ignore id 255.

    Image `i` depends only on (`seed`, `i`), so a dataset is reproducible and a different seed gives
    different images.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int | tuple[int, int] = 128,
        num_classes: int = len(SYNTHETIC_CLASSES),
        seed: int = 0,
        ignore_probability: float = 0.5,
        transform: Transform | None = None,
    ) -> None:
        if not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
            raise ValueError(f"num_classes must be in 2..{len(SYNTHETIC_CLASSES)}, got {num_classes}")
        self.num_images = num_images
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.classes = SYNTHETIC_CLASSES[:num_classes]
        self.seed = seed
        self.ignore_probability = ignore_probability
        self.transform = transform

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> Sample:
        image, label = self.generate(index)
        return to_sample(image, label, f"synthetic_{self.seed}_{index:06d}", self.transform)

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw pair: uint8 RGB image [H, W, 3] and uint8 train-id label [H, W]."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        rng = np.random.default_rng((self.seed, index))
        height, width = self.size
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        image = _smooth_background(rng, height, width)
        label = np.zeros((height, width), np.uint8)

        object_classes = np.arange(1, len(self.classes))
        for _ in range(int(rng.integers(3, 9))):
            class_id = int(rng.choice(object_classes))
            spec = self.classes[class_id]
            mask = _shape_mask(rng, spec.shape, yy, xx)
            image[mask] = _texture(rng, spec, yy, xx)[mask]
            label[mask] = class_id

        if rng.random() < self.ignore_probability:
            mask = _rectangle(rng, yy, xx, min_side=0.1, max_side=0.3)
            image[mask] = rng.random((int(mask.sum()), 3), dtype=np.float32)
            label[mask] = IGNORE_INDEX

        image *= rng.uniform(0.85, 1.15)  # global illumination
        image += rng.normal(0.0, 0.03, image.shape).astype(np.float32)
        return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8), label


def _smooth_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.uniform(0.25, 0.6, (4, 4, 3)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, spec: _SyntheticClass, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    colour = np.clip(np.asarray(spec.colour, np.float32) + rng.uniform(-0.08, 0.08, 3), 0, 1)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if spec.texture == "stripes":
        tone = 0.55 + 0.45 * (np.sin(2 * np.pi * u / spec.period + rng.uniform(0, 6.3)) > 0)
    elif spec.texture == "checker":
        tone = 0.55 + 0.45 * ((np.floor(u / spec.period) + np.floor(v / spec.period)) % 2)
    elif spec.texture == "speckle":
        tone = np.clip(rng.normal(0.78, 0.22, yy.shape), 0, 1.3)
    else:  # flat
        tone = np.full(yy.shape, 0.9)
    return (tone[..., None] * colour).astype(np.float32)


def _shape_mask(rng: np.random.Generator, shape: str, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    height, width = yy.shape
    # radius log-uniform from 3 pixels to a third of the image side: objects up to two thirds of it across
    radius = float(np.exp(rng.uniform(np.log(3.0), np.log(min(height, width) / 3))))
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    if shape == "disc":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    if shape == "square":
        angle = rng.uniform(0, np.pi / 2)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        return (np.abs(u) <= radius) & (np.abs(v) <= radius)
    if shape == "wire":
        return _polyline(rng, yy, xx, thickness=rng.uniform(0.5, 1.2))
    # blob: union of two or three random ellipses
    mask = np.zeros(yy.shape, bool)
    for _ in range(int(rng.integers(2, 4))):
        oy, ox = rng.normal(0, radius / 2, 2)
        a, b = radius * rng.uniform(0.5, 1.0, 2)
        angle = rng.uniform(0, np.pi)
        u = (xx - cx - ox) * np.cos(angle) + (yy - cy - oy) * np.sin(angle)
        v = -(xx - cx - ox) * np.sin(angle) + (yy - cy - oy) * np.cos(angle)
        mask |= (u / a) ** 2 + (v / b) ** 2 <= 1
    return mask


def _polyline(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, thickness: float) -> np.ndarray:
    height, width = yy.shape
    points = rng.uniform((0, 0), (height, width), (int(rng.integers(2, 5)), 2))
    mask = np.zeros(yy.shape, bool)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:], strict=True):
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
        mask |= (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2 <= thickness**2
    return mask


def _rectangle(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, min_side: float, max_side: float):
    height, width = yy.shape
    h, w = rng.uniform(min_side, max_side, 2) * (height, width)
    y0, x0 = rng.uniform(0, height - h), rng.uniform(0, width - w)
    return (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
