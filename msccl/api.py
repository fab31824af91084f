"""The Python entry for inference: a trained checkpoint as a callable that segments images.

    import msccl

    seg = msccl.Segmenter.from_checkpoint("runs/synthetic/version_0/checkpoints/last.ckpt", device="cuda")
    label = seg("photo.png")                 # train ids [H, W] at the image's own size
    labels = seg(["a.png", "b.jpg", array])  # one label map per image; sizes may differ
    picture = seg.overlay("photo.png")       # RGB: the image in its classes' colours, with a legend
    seg.class_names, seg.palette             # what the ids mean and how they are drawn

It does what `msccl predict` does, by the same code: files are read by `msccl.data.base.read_image` (any
size, 8 or 16 bits, grey, grey + alpha, RGB, RGBA, palette), arrays by the same rules (`to_rgb8`), both
normalised by `eval_transform`, and each image is inferred on its own with the checkpoint's evaluation
settings (whole image, or sliding window / multi-scale + flip TTA where the run set them; `evaluation=`
chooses others), so the label maps equal the label PNGs of `msccl predict` exactly. The checkpoint is
checked first (complete, digest: `msccl.training.checkpoint.verify_checkpoint`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from msccl.data.base import read_image, to_rgb8, to_sample
from msccl.data.transforms import eval_transform
from msccl.plots.legend import add_legend
from msccl.plots.overlay import overlay
from msccl.training import SegmentationModule
from msccl.training.checkpoint import verify_checkpoint
from msccl.training.evaluation import Evaluation

__all__ = ["ImageInput", "Segmenter"]

ImageInput = str | os.PathLike | np.ndarray
"""An image file, or an RGB (not OpenCV's BGR) / grey array [H, W(, C)] of uint8 or uint16."""


class Segmenter:
    """A trained network that turns images into label maps (train ids) at their own size.

    Args:
        module: the trained `SegmentationModule` (`from_checkpoint` loads one).
        device: where the network runs ("cpu", "cuda", "cuda:1", a torch.device).
        evaluation: how logits are computed (`msccl.training.evaluation.Evaluation`); default: the
            module's own, i.e. the checkpoint's evaluation settings.
    """

    def __init__(
        self,
        module: SegmentationModule,
        device: str | torch.device = "cpu",
        evaluation: Evaluation | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.evaluation = evaluation or module.evaluation
        self._transform = eval_transform()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", evaluation: Evaluation | None = None
    ) -> Segmenter:
        """Load a checkpoint written by `msccl fit`; a `CheckpointError` (one line naming the file) when
        it is missing, incomplete or altered since it was saved."""
        verify_checkpoint(path)
        module = SegmentationModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        return cls(module, device, evaluation)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.module.class_names

    @property
    def num_classes(self) -> int:
        return self.module.num_classes

    @property
    def palette(self) -> np.ndarray:
        """uint8 [num_classes, 3]: the RGB colour of each class (the run's data palette)."""
        return np.asarray(self.module.palette, np.uint8)

    def __call__(self, images: ImageInput | Sequence[ImageInput] | Tensor) -> np.ndarray | list | Tensor:
        """Label maps at the input size, as `msccl predict` writes them.

        - one image (a path or an array [H, W(, C)]): a uint8 array [H, W] (uint16 above 256 classes);
        - a list or tuple of images, or an array batch [B, H, W, C]: one label map per image, in a list
          (an array [B, H, W] for an array batch); each image is inferred on its own, as predict does;
        - a tensor [B, 3, H, W] (or [3, H, W]) already normalised as `eval_transform` does (what msccl's
          data modules yield): int64 label maps [B, H, W] ([H, W]) on the device, in one forward.
        """
        if isinstance(images, Tensor):
            batch = images if images.dim() == 4 else images[None]
            labels = self._infer(batch)
            return labels if images.dim() == 4 else labels[0]
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return np.stack([self._segment(image) for image in images])
        if isinstance(images, (list, tuple)):
            return [self._segment(image) for image in images]
        return self._segment(images)

    def overlay(
        self, image: ImageInput, label: np.ndarray | None = None, alpha: float = 0.5, legend: bool = True
    ) -> np.ndarray:
        """RGB uint8: `image` blended with the class colours of `label` (default: this network's
        prediction), `alpha` the colour's weight, and below it a legend of the classes present; with the
        defaults, exactly `msccl predict`'s `overlays/<name>.png`."""
        rgb = self._read(image)
        label = self(rgb) if label is None else np.asarray(label)
        if label.shape != rgb.shape[:2]:
            raise ValueError(f"label map {label.shape} and image {rgb.shape[:2]} differ in size")
        blended = overlay(rgb, label, self.palette, alpha)
        return add_legend(blended, label, self.class_names, self.palette) if legend else blended

    def _read(self, image: ImageInput) -> np.ndarray:
        if isinstance(image, np.ndarray):
            return to_rgb8(image, "the image array")
        if isinstance(image, (str, os.PathLike)):
            return read_image(image)
        raise TypeError(f"expected an image path or array, got {type(image).__name__}")

    def _segment(self, image: ImageInput) -> np.ndarray:
        sample = to_sample(self._read(image), None, "", self._transform)
        label = self._infer(sample["image"][None])[0].cpu().numpy()
        return label.astype(np.uint8 if self.num_classes <= 256 else np.uint16)

    @torch.inference_mode()
    def _infer(self, batch: Tensor) -> Tensor:
        evaluation = self.evaluation.for_size(batch.shape[-2:])  # large images in windows, as predict
        return evaluation(self.module, batch.to(self.device)).argmax(1)
