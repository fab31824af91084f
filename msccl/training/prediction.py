"""`msccl predict --output DIR`: a label PNG and a colour overlay per input image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from msccl.data.base import distinct_palette, read_image

__all__ = ["PredictionWriter", "colourise", "overlay"]


def colourise(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a train-id map [H, W] with one palette row [C, 3] per class."""
    return palette[label]


def overlay(image: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with each pixel's class colour blended in (`alpha` = weight of the colour)."""
    blended = alpha * colourise(label, palette).astype(np.float32) + (1 - alpha) * image.astype(np.float32)
    return blended.round().astype(np.uint8)


class PredictionWriter(BasePredictionWriter):
    """Writes `labels/<name>.png` (train ids: 8-bit, 16-bit above 256 classes) and
    `overlays/<name>.png` (the input blended with the data module's palette) for every predicted image.

    Args:
        output_dir: the only folder written to (created if needed).
        alpha: weight of the class colour in the overlay.
    """

    def __init__(self, output_dir: str, alpha: float = 0.5) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.alpha = alpha
        self.palette = np.zeros((0, 3), np.uint8)
        self.written: dict[str, str] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        num_classes = pl_module.num_classes
        palette: Sequence = getattr(trainer.datamodule, "palette", ()) or ()
        if len(palette) < num_classes:
            palette = distinct_palette(num_classes)
        self.palette = np.asarray(palette, np.uint8)[:num_classes]
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
        paths = prediction.get("path") or [None] * len(prediction["name"])
        for name, path, label in zip(prediction["name"], paths, prediction["prediction"], strict=True):
            self.write(name, path, label)

    def write(self, name: str, source: str | None, label: Tensor) -> None:
        """Write one image's label map (and its overlay when the source image is known)."""
        if name in self.written:
            raise ValueError(
                f"two inputs predict to the same output name {name!r}: {self.written[name]} and {source}; "
                "give the images distinct file names (stems)"
            )
        self.written[name] = str(source)
        label_map = label.cpu().numpy().astype(np.uint8 if len(self.palette) <= 256 else np.uint16)
        _write_png(self.output_dir / "labels" / f"{name}.png", label_map)
        if source is not None:
            image = read_image(source)
            blended = overlay(image, label_map, self.palette, self.alpha)
            _write_png(self.output_dir / "overlays" / f"{name}.png", cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")
