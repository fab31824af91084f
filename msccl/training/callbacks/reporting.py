"""What an evaluation leaves behind besides its metrics: validation images on W&B, and the confusion
matrix and per-class IoU as pictures in the run directory (and on W&B)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from lightning.pytorch import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from msccl.data.transforms import denormalise

if TYPE_CHECKING:
    import lightning as L

    from msccl.training.module import SegmentationModule

__all__ = ["EvaluationFigures", "WandbValidationImages"]


class WandbValidationImages(Callback):
    """Logs the first `num_images` validation images of every validation (`val/examples`), in their
    original colours (the loaders' ImageNet normalisation undone), each with its predicted and true masks
    as W&B mask overlays; does nothing unless a WandbLogger is configured.

    The images are collected across batches until there are `num_images`, so a `val_batch_size` of 1
    (every real-data recipe) logs as many as one large batch would; fewer only when the validation has
    fewer images. Rank 0 logs its own images.

    Args:
        num_images: images per validation (0 turns it off).
    """

    def __init__(self, num_images: int = 4) -> None:
        if num_images < 0:
            raise ValueError(f"wandb_validation_images.num_images must be >= 0, got {num_images}")
        self.num_images = num_images
        self._collected: list[tuple[np.ndarray, dict, str]] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._collected = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch: dict, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        wanted = self.num_images - len(self._collected)
        if wanted <= 0 or trainer.sanity_checking or not trainer.is_global_zero or outputs is None:
            return
        if not any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
            return
        names = dict(enumerate(pl_module.class_names))
        samples = zip(batch["image"], outputs, batch["label"], batch["name"], strict=True)
        for image, prediction, label, name in itertools.islice(samples, wanted):
            masks = {
                "prediction": {"mask_data": prediction.cpu().numpy(), "class_labels": names},
                "ground_truth": {
                    "mask_data": label.cpu().numpy(),
                    "class_labels": {**names, pl_module.ignore_index: "ignore"},
                },
            }
            self._collected.append((denormalise(image), masks, name))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._collected:
            return
        images, masks, captions = (list(column) for column in zip(*self._collected, strict=True))
        self._collected = []
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="val/examples", images=images, masks=masks, caption=captions, step=trainer.global_step
                )


class EvaluationFigures(Callback):
    """After every `validate` and `test`, and after the last validation of `fit`, writes into the run
    directory (`trainer.default_root_dir`) `<stage>_confusion.png` (row-normalised confusion matrix with
    class names), `<stage>_confusion.csv` (the pixel counts it shows: the metric's confusion matrix) and
    `<stage>_iou.png` (per-class IoU bars), for stage `val` or `test`; with a WandbLogger they are logged
    too (`<stage>/confusion_matrix`, `<stage>/iou_chart`) with a table of per-class IoU
    (`<stage>/iou_table`). Rank 0 only: the confusion matrix is already summed over processes.

    Drawing needs matplotlib (the `plots` extra): without it a warning says so and nothing is drawn.

    Args:
        enabled: False writes nothing.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.written: dict[str, dict[str, Path]] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # during fit, only the last validation (on_fit_end)
            self._write(trainer, pl_module, "val")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module, "val")

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module, "test")

    def _write(self, trainer: L.Trainer, pl_module: SegmentationModule, stage: str) -> None:
        result = pl_module.last_iou  # the evaluation that just ended; {} before the first
        if not (self.enabled and trainer.is_global_zero and result):
            return
        try:
            from msccl.plots.figures import write_evaluation_figures
        except ImportError as error:
            rank_zero_warn(f"no confusion-matrix or IoU pictures: {error}")
            return
        iou = result["iou"].cpu().numpy()
        written = write_evaluation_figures(
            trainer.default_root_dir, stage, result["confusion"].cpu().numpy(), iou, pl_module.class_names
        )
        self.written[stage] = written
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{stage}/confusion_matrix", images=[str(written["confusion"])])
                logger.log_image(key=f"{stage}/iou_chart", images=[str(written["iou"])])
                rows = [
                    [name, None if value != value else float(value)]
                    for name, value in zip(pl_module.class_names, iou.tolist(), strict=True)
                ]
                logger.log_table(key=f"{stage}/iou_table", columns=["class", "IoU"], data=rows)
