"""A procedural segmentation dataset that needs no download and is deterministic from a seed.

Classes are designed so that no single cue separates them: pairs share a colour and differ in texture
scale (fine vs coarse stripes), texture statistics (checker vs speckle) or shape (disc vs square), so a
network needs both local and object-scale context; "wire" objects are only 1-2 pixels wide, and
ignore-labelled noise patches stand in for unlabelled regions.

`layout="context"` is a harder variant where a pixel's class depends on context far beyond its
neighbourhood: the image is split into two regions, each framed in one of two colours, and the objects
inside share one texture; an object's class is the colour of its region's frame (the region's outer 3
pixels), and objects keep `context_margin` pixels from the region's border. Within any window of radius
`context_margin` - 3 the two object classes are pixel-identical, so only a network that relates a pixel
to distant context can separate them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from torch.utils.data import Dataset

from msccl.data.base import Sample, Transform, distinct_palette, to_sample
from msccl.labels import IGNORE_INDEX

__all__ = [
    "CONTEXT_CLASSES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_LAYOUTS",
    "SYNTHETIC_PALETTE",
    "SyntheticSegmentation",
    "synthetic_classes",
]


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

CONTEXT_CLASSES: tuple[_SyntheticClass, ...] = (
    _SyntheticClass("background", (0.45, 0.45, 0.45), "smooth"),
    _SyntheticClass("object_in_red_frame", (0.7, 0.7, 0.3), "checker", period=5),
    _SyntheticClass("object_in_blue_frame", (0.7, 0.7, 0.3), "checker", period=5),
)
"""`layout="context"`'s classes: the two object classes look the same; their frames decide (module doc)."""

FRAME_COLOURS = ((0.9, 0.15, 0.15), (0.15, 0.25, 0.9))  # red, blue: object class 1 + index
FRAME_WIDTH = 3

SYNTHETIC_LAYOUTS = {"objects": SYNTHETIC_CLASSES, "context": CONTEXT_CLASSES}
"""Layout name -> its classes (`num_classes` takes the first ones)."""


def synthetic_classes(layout: str, num_classes: int | None = None) -> tuple[_SyntheticClass, ...]:
    """The first `num_classes` classes of a layout (all of them by default), checked."""
    if layout not in SYNTHETIC_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(SYNTHETIC_LAYOUTS)}, got {layout!r}")
    classes = SYNTHETIC_LAYOUTS[layout]
    num_classes = len(classes) if num_classes is None else num_classes
    low = len(classes) if layout == "context" else 2  # the context task needs both object classes
    if not low <= num_classes <= len(classes):
        raise ValueError(
            f"num_classes must be in {low}..{len(classes)} for layout {layout!r}, got {num_classes}"
        )
    return classes[:num_classes]


SYNTHETIC_PALETTE = distinct_palette(len(SYNTHETIC_CLASSES))
"""The colours that show the synthetic labels (overlays, label PNGs, legends): one per class. Not the
image colours, which the classes share in pairs by design (checker and speckle, disc and square, ...)."""


class SyntheticSegmentation(Dataset):
    """`num_images` images of `image_size` pixels with `num_classes` classes, ignore id 255.

    `layout` "objects" (2..8 classes) scatters the classes of `SYNTHETIC_CLASSES`; "context" (3 classes,
    `CONTEXT_CLASSES`) decides an object's class by its region's frame, at least `context_margin` pixels
    away (default: an eighth of the shorter side, at least 8). Image `i` depends only on (`seed`, `i`),
    so a dataset is reproducible and a different seed gives different images.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int | tuple[int, int] = 128,
        num_classes: int | None = None,
        seed: int = 0,
        ignore_probability: float = 0.5,
        transform: Transform | None = None,
        layout: str = "objects",
        context_margin: int | None = None,
    ) -> None:
        self.classes = synthetic_classes(layout, num_classes)
        self.layout = layout
        self.num_images = num_images
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.context_margin = context_margin or max(8, min(self.size) // 8)
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
        if self.layout == "context":
            return _context_image(rng, self.size, self.context_margin)
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

        return _photographed(image, *_lighting(rng, image.shape)), label


def _lighting(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[float, np.ndarray]:
    """A global illumination factor and sensor noise."""
    return rng.uniform(0.85, 1.15), rng.normal(0.0, 0.03, shape).astype(np.float32)


def _photographed(image: np.ndarray, illumination: float, noise: np.ndarray) -> np.ndarray:
    image = image * illumination
    image += noise
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def _context_image(
    rng: np.random.Generator,
    size: tuple[int, int],
    margin: int,
    frame_kinds: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two regions (split at a random column), each framed in red or blue (`frame_kinds`, drawn last
    from `rng` when None, so the same draws with other frames give the same image elsewhere); objects
    of one texture keep `margin` pixels from every frame and take their region's frame class."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _smooth_background(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    split = int(rng.uniform(0.4, 0.6) * width)
    regions = [(0, split), (split, width)]
    spec = CONTEXT_CLASSES[1]
    objects = np.zeros((len(regions), height, width), bool)
    for r, (left, right) in enumerate(regions):
        top, bottom, start, end = margin, height - margin, left + margin, right - margin
        inside = (yy >= top) & (yy < bottom) & (xx >= start) & (xx < end)
        for _ in range(int(rng.integers(1, 4))):
            radius = rng.uniform(0.3, 0.6) * max(min(bottom - top, end - start), 2)
            centre_y, centre_x = (
                rng.uniform(top, max(bottom, top + 1)),
                rng.uniform(start, max(end, start + 1)),
            )
            mask = _blob(rng, yy, xx, centre_y, centre_x, radius) & inside
            image[mask] = _texture(rng, spec, yy, xx)[mask]
            objects[r] |= mask
    lighting = _lighting(rng, image.shape)
    kinds = frame_kinds if frame_kinds is not None else tuple(int(k) for k in rng.integers(0, 2, 2))
    for r, (left, right) in enumerate(regions):
        inner = (yy >= FRAME_WIDTH) & (yy < height - FRAME_WIDTH)
        inner &= (xx >= left + FRAME_WIDTH) & (xx < right - FRAME_WIDTH)
        frame = (xx >= left) & (xx < right) & ~inner
        image[frame] = FRAME_COLOURS[kinds[r]]
        label[objects[r]] = 1 + kinds[r]
    return _photographed(image, *lighting), label


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
    return _blob(rng, yy, xx, cy, cx, radius)


def _blob(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float
) -> np.ndarray:
    """A union of two or three random ellipses around (cy, cx)."""
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
