"""`msccl data browse`: look at a dataset split before training on it.

Writes into the output folder `samples_NN.png` (grids of images with their labels overlaid in the
dataset's palette, each as read from disk and after the training augmentation, side by side; a legend
names the classes) and `pixel_share.png` (the share of the labelled pixels per class over the whole
split, from every label). The sampled images and their augmentation are fixed by `--seed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from msccl.data.base import Transform
from msccl.data.transforms import denormalise, seed_pipeline
from msccl.labels import IGNORE_INDEX
from msccl.plots.figures import image_pairs_figure, pixel_share_figure, save
from msccl.plots.overlay import overlay
from msccl.progress import progress

__all__ = ["Browsable", "browse", "pixel_counts"]

IMAGES_PER_GRID = 8
IGNORE_COLOUR = (0, 0, 0)


@dataclass(frozen=True)
class Browsable:
    """What browsing needs of a split: its samples as read (RGB uint8, train ids with ignore 255), its
    labels alone (for the statistics), its classes and palette, and the training augmentation."""

    name: str
    size: int
    load: Callable[[int], tuple[np.ndarray, np.ndarray]]
    load_label: Callable[[int], np.ndarray]
    class_names: Sequence[str]
    palette: Sequence[tuple[int, int, int]]
    augmentation: Transform


class _LabelCounts(Dataset):
    """Pixels per label value [256] of each label, so a DataLoader can spread the decoding."""

    def __init__(self, load_label: Callable[[int], np.ndarray], size: int) -> None:
        self.load_label, self.size = load_label, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> np.ndarray:
        return np.bincount(self.load_label(index).ravel(), minlength=256)


def pixel_counts(source: Browsable, workers: int = 0, quiet: bool = False) -> np.ndarray:
    """Pixels per label value [256] over every label of the split (train ids; 255 = ignore)."""
    loader = DataLoader(_LabelCounts(source.load_label, source.size), batch_size=8, num_workers=workers)
    total = np.zeros(256, np.int64)
    for batch in progress(loader, desc=f"{source.name}: counting pixels", unit="batch", quiet=quiet):
        total += batch.numpy().sum(0)
    return total


def browse(
    source: Browsable,
    output: str | Path,
    num_images: int = 8,
    seed: int = 0,
    workers: int = 0,
    quiet: bool = False,
    dpi: int = 100,
) -> list[Path]:
    """Write the sample grids and the pixel-share chart of `source` into `output` (`dpi`: pixels per inch
    of the PNGs); returns the files."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    num_classes = len(source.class_names)
    palette = np.zeros((256, 3), np.uint8)
    palette[IGNORE_INDEX] = IGNORE_COLOUR
    palette[:num_classes] = np.asarray(source.palette[:num_classes], np.uint8)
    names = [*source.class_names, "(ignore)"]
    colours = [*palette[:num_classes], IGNORE_COLOUR]

    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(source.size, size=min(num_images, source.size), replace=False))
    pairs, captions = [], []
    for index in progress(
        indices.tolist(), desc=f"{source.name}: drawing samples", unit="image", quiet=quiet
    ):
        image, label = source.load(index)
        seed_pipeline(source.augmentation, seed, index)  # the same augmentation on every call
        augmented = source.augmentation(image=image, mask=label)
        augmented_image = denormalise(augmented["image"])
        augmented_label = np.asarray(augmented["mask"], np.uint8)
        pairs.append((overlay(image, label, palette), overlay(augmented_image, augmented_label, palette)))
        captions.append(f"#{index}")
    written = []
    for start in range(0, len(pairs), IMAGES_PER_GRID):
        figure = image_pairs_figure(
            pairs[start : start + IMAGES_PER_GRID],
            captions[start : start + IMAGES_PER_GRID],
            names,
            colours,
            headings=("as read", "augmented"),
            title=f"{source.name}: labels overlaid (as read | after the training augmentation)",
        )
        written.append(save(figure, output / f"samples_{start // IMAGES_PER_GRID:02d}.png", dpi))

    counts = pixel_counts(source, workers, quiet)
    labelled = counts[:num_classes].sum()
    shares = counts[:num_classes] / max(1, labelled)
    ignored = counts[IGNORE_INDEX] / max(1, counts.sum())
    title = f"{source.name}: {source.size} labels, {100 * ignored:.2f}% of the pixels ignore"
    written.append(
        save(pixel_share_figure(shares, source.class_names, palette, title), output / "pixel_share.png", dpi)
    )
    return written
