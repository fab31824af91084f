"""`msccl predict --output DIR`: a label PNG and a colour overlay per input image."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch import Tensor

from msccl.data.base import IMAGE_EXTENSIONS, read_image
from msccl.labels import IGNORE_INDEX
from msccl.plots.legend import add_legend
from msccl.plots.overlay import overlay

__all__ = ["IGNORE_COLOUR", "PredictionWriter", "write_label_png"]

IGNORE_COLOUR = (0, 0, 0)
"""Colour of the ignore id (255) and of the unused entries in the palette of a label PNG."""


def write_label_png(path: Path, label: np.ndarray, palette: np.ndarray) -> None:
    """Train ids [H, W] as a palette PNG (mode "P"): the pixel values are the ids, so `read_label` or
    any reader of indices gets them back, and any viewer shows the classes in `palette` [C, 3] colours
    (ignore and unused entries in IGNORE_COLOUR). Above 256 classes: a 16-bit grey PNG of the ids."""
    if len(palette) > 256:
        _write_png(path, label.astype(np.uint16))
        return
    colours = np.tile(np.asarray(IGNORE_COLOUR, np.uint8), (256, 1))
    colours[: len(palette)] = palette
    if len(palette) <= IGNORE_INDEX:
        colours[IGNORE_INDEX] = IGNORE_COLOUR
    image = Image.fromarray(label.astype(np.uint8))
    image.putpalette(colours.ravel().tolist())  # mode L -> P, the values untouched
    image.save(path)


class PredictionWriter(BasePredictionWriter):
    """Writes `labels/<name>.png` (`write_label_png`: palette PNGs of the train ids) and
    `overlays/<name>.png` (the input blended with the model's palette, which comes from the data, and a
    legend of the classes it shows: `msccl.plots.legend`) for every readable image.

    A file the data could not read (ImageFolder's "unreadable" samples) does not stop the others: it is
    kept in `unreadable` (path -> reason) and listed at the end of the run; `msccl predict` then exits 1.

    Args:
        output_dir: the only folder written to (created if needed).
        alpha: weight of the class colour in the overlay.
    """

    def __init__(self, output_dir: str, alpha: float = 0.5) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.alpha = alpha
        self.palette = np.zeros((0, 3), np.uint8)
        self.class_names: tuple[str, ...] = ()
        self.written: dict[str, str] = {}
        self.unreadable: dict[str, str] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.palette = np.asarray(pl_module.palette, np.uint8)
        self.class_names = pl_module.class_names
        for folder in ("labels", "overlays"):
            (self.output_dir / folder).mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: dict,
        batch_indices,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if "unreadable" in prediction:
            self.unreadable.update(zip(prediction["path"], prediction["unreadable"], strict=True))
            return
        paths = prediction.get("path") or [None] * len(prediction["name"])
        for name, path, label in zip(prediction["name"], paths, prediction["prediction"], strict=True):
            self.write(name, path, label)

    def on_predict_end(self, trainer, pl_module) -> None:
        """Say what was written, list the folder's entries that are no images (skipped) and every
        unreadable input with its reason."""
        total = len(self.written) + len(self.unreadable)
        print(f"wrote the predictions of {len(self.written)} of {total} images to {self.output_dir}")
        loaders = trainer.predict_dataloaders
        skipped = [
            path
            for loader in (loaders if isinstance(loaders, (list, tuple)) else [loaders])
            for path in getattr(getattr(loader, "dataset", None), "skipped", [])
        ]
        if skipped:
            print(
                f"skipped {len(skipped)} not images (no {', '.join(IMAGE_EXTENSIONS)} file):"
                + "".join(f"\n  {path}{'/' if path.is_dir() else ''}" for path in skipped)
            )
        if self.unreadable:
            reasons = "".join(f"\n  {reason}" for reason in self.unreadable.values())
            print(f"{len(self.unreadable)} unreadable images (no output):{reasons}", file=sys.stderr)

    def write(self, name: str, source: str | None, label: Tensor) -> None:
        """Write one image's label map (and its overlay when the source image is known)."""
        if name in self.written:
            raise ValueError(
                f"two inputs predict to the same output name {name!r}: {self.written[name]} and {source}; "
                "give the images distinct file names (stems)"
            )
        self.written[name] = str(source)
        label_map = label.cpu().numpy()
        write_label_png(self.output_dir / "labels" / f"{name}.png", label_map, self.palette)
        if source is not None:
            image = read_image(source)
            blended = add_legend(
                overlay(image, label_map, self.palette, self.alpha), label_map, self.class_names, self.palette
            )
            _write_png(self.output_dir / "overlays" / f"{name}.png", cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")
