"""SegmentationModule: the science of a training run (network, losses, metrics, optimiser, schedule)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from msccl.contrastive import ProjectionHeads, SegmentationContrastiveLoss
from msccl.contrastive.heads import ProjectionLayout
from msccl.data.base import distinct_palette
from msccl.labels import IGNORE_INDEX
from msccl.models import NetBuilder, SegmentationOutput
from msccl.training.evaluation import Evaluation
from msccl.training.metrics import SegmentationIoU, format_iou_table, group_miou
from msccl.training.optim import parameter_groups, poly_with_warmup

__all__ = ["SegmentationModule", "ContrastiveLossBuilder"]

ContrastiveLossBuilder = Callable[[int, int], SegmentationContrastiveLoss]
"""The contrastive loss class and its arguments; the module supplies `num_classes` and `ignore_index`."""


class SegmentationModule(L.LightningModule):
    """Segmentation training: CE (+ auxiliary CE) (+ weight x multi/cross-scale contrastive), mIoU.

    Args:
        net: the network class (config `class_path` + `init_args`); it is built with `num_classes`.
        num_classes: linked from the data module by the CLI.
        class_names: linked from the data module; used for per-class IoU logs and tables.
        ignore_index: label id excluded from losses and metrics.
        class_weights: per-class CE weights (e.g. the paper's HRNet Cityscapes recipe).
        aux_weight: weight of the auxiliary CE where the network has an auxiliary head (0.4 in the paper).
        contrastive: the contrastive loss (`class_path: msccl.contrastive.MSCSContrastiveLoss` or
            `msccl.contrastive.PixelContrastLoss` with its `init_args`), or null for CE only. When set,
            the network returns its taps in training and projection heads map the maps the loss asks for
            (one per tap for MS + CS; one over the concatenated taps for pixel contrast) into the
            embedding space; a loss that `needs_predictions` also gets the argmax of the logits.
        contrastive_weight: weight of the contrastive term in the total loss (0.1 in the paper);
            `ContrastiveWeightSchedule` can delay and ramp it.
        projection_dim: channels of the projection heads' output (256 in the paper).
        projection_bn_momentum: momentum of the projection heads' BatchNorms (the official code: 0.0003;
            it only moves running statistics, which nothing uses: the heads never run at inference).
        projection_layout: `mscs` (the paper's heads) or `convmlp` (ContrastiveSeg's).
        optimizer: optimiser class and its arguments; default SGD lr 0.01, momentum 0.9, wd 5e-4.
        poly_power: exponent of the per-iteration poly decay of the learning rate.
        warmup_steps: iterations of linear warm-up before the poly decay.
        warmup_start_factor: LR factor at the first warm-up step.
        decay_norms_and_biases: False keeps the parameters `no_decay_rule` picks out of weight decay.
        no_decay_rule: "shape" (every parameter with at most one dimension, i.e. norms and biases, and
            position tables) or "official" (the authors' name list: `absolute_pos_embed`, `norm`,
            `relative_position_bias_table`); `msccl.training.optim.NO_DECAY_RULES`.
        evaluation: whole-image / sliding-window / multi-scale + flip inference for validate, test and
            predict (`msccl.training.evaluation.Evaluation`); default: whole image, one scale.
        class_groups: linked from the data module: named groups of class ids whose mean IoU is reported
            too (e.g. CaDIS anatomy / instruments / rare classes).
        palette: linked from the data module: one RGB colour per class, for overlays and label PNGs; it
            travels in the checkpoint so that `msccl.Segmenter` draws a run's classes in its colours.
            Missing or too short (an older checkpoint, a data module without one): `distinct_palette`.
    """

    def __init__(
        self,
        net: NetBuilder,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        class_weights: Sequence[float] | None = None,
        aux_weight: float = 0.4,
        contrastive: ContrastiveLossBuilder | None = None,
        contrastive_weight: float = 0.1,
        projection_dim: int = 256,
        projection_bn_momentum: float = 0.1,
        projection_layout: ProjectionLayout = "mscs",
        optimizer: OptimizerCallable | None = None,
        poly_power: float = 0.9,
        warmup_steps: int = 0,
        warmup_start_factor: float = 1e-6,
        decay_norms_and_biases: bool = True,
        no_decay_rule: Literal["shape", "official"] = "shape",
        evaluation: Evaluation | None = None,
        class_groups: Mapping[str, Sequence[int]] | None = None,
        palette: Sequence[tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = net(num_classes)
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names else tuple(str(c) for c in range(num_classes))
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.ignore_index = ignore_index
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
        self.register_buffer(
            "class_weights",
            None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32),
            persistent=False,
        )
        self.aux_weight = aux_weight
        # Heads are built now from the taps the network announces, and exist only for
        # training: inference (`forward`) and export never run them.
        self.contrastive_loss = None if contrastive is None else contrastive(num_classes, ignore_index)
        if self.contrastive_loss is not None:
            # e.g. a scale_weights list of the wrong length stops the run now, not at the first step
            self.contrastive_loss.validate_setup(len(self.net.taps), projection_dim)
        self.projection_heads = (
            None
            if contrastive is None
            else ProjectionHeads(
                self.contrastive_loss.projection_channels([tap.channels for tap in self.net.taps]),
                projection_dim,
                projection_bn_momentum,
                projection_layout,
            )
        )
        self.contrastive_weight = contrastive_weight
        self.contrastive_weight_factor = 1.0  # set by ContrastiveWeightSchedule; constant 1 = the paper
        self.optimizer = optimizer
        self.poly_power = poly_power
        self.warmup_steps = warmup_steps
        self.warmup_start_factor = warmup_start_factor
        self.decay_norms_and_biases = decay_norms_and_biases
        self.no_decay_rule = no_decay_rule
        self.evaluation = evaluation or Evaluation()
        self.class_groups = {name: tuple(members) for name, members in (class_groups or {}).items()}
        for name, members in self.class_groups.items():
            if not members or not all(0 <= c < num_classes for c in members):
                raise ValueError(f"class group {name!r}: ids {list(members)} outside 0..{num_classes - 1}")
        if palette is None or len(palette) < num_classes:
            palette = distinct_palette(num_classes)
        self.palette = tuple(tuple(int(v) for v in colour) for colour in palette[:num_classes])
        if any(len(colour) != 3 or not all(0 <= v <= 255 for v in colour) for colour in self.palette):
            raise ValueError(f"palette: expected one [r, g, b] of 0..255 per class, got {list(palette)}")
        self.val_iou = SegmentationIoU(num_classes, ignore_index)
        self.test_iou = SegmentationIoU(num_classes, ignore_index)
        # the last evaluation's SegmentationIoU.compute(), {} before one; EvaluationFigures draws it
        self.last_iou: dict[str, Tensor] = {}

    # ---- losses -------------------------------------------------------------------------------------
    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        weight, ignore = self.class_weights, self.ignore_index
        return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=ignore)

    def compute_losses(self, output: SegmentationOutput, labels: Tensor) -> dict[str, Tensor]:
        """Every term of the training objective; `loss` is the weighted total (docs/method.md A4)."""
        losses = {"ce": self.cross_entropy(output.logits, labels)}
        total = losses["ce"]
        if output.aux_logits is not None:
            losses["aux_ce"] = self.cross_entropy(output.aux_logits, labels)
            total = total + self.aux_weight * losses["aux_ce"]
        if self.contrastive_loss is not None and output.taps:
            projected = self.projection_heads(self.contrastive_loss.projection_inputs(output.taps))
            extra = {}
            if self.contrastive_loss.needs_predictions:
                extra["predictions"] = output.logits.detach().argmax(1)
            contrastive, terms = self.contrastive_loss(projected, labels, **extra)
            losses["contrastive"] = contrastive
            losses.update({f"contrastive/{name}": value for name, value in terms.items()})
            total = total + self.effective_contrastive_weight * contrastive
        losses["loss"] = total
        return losses

    @property
    def effective_contrastive_weight(self) -> float:
        return self.contrastive_weight * self.contrastive_weight_factor

    # ---- steps --------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        """Logits at input resolution: the inference path."""
        return self.net(images).logits

    def infer(self, images: Tensor) -> Tensor:
        """Evaluation logits: the configured `evaluation` (whole images at one scale for the validation
        inside fit, unless `evaluation.during_fit`)."""
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if fitting and not self.evaluation.during_fit:
            return Evaluation(size_divisor=self.evaluation.size_divisor)(self, images)
        return self.evaluation(self, images)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images, labels = batch["image"], batch["label"]
        output = self.net(images, return_taps=self.contrastive_loss is not None)
        losses = self.compute_losses(output, labels)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=len(images))
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(images))
        return losses["loss"]

    def _evaluate(self, batch: dict, metric: SegmentationIoU, stage: str) -> Tensor:
        """Log the loss, update the split's confusion matrix; the predictions go to callbacks."""
        images, labels = batch["image"], batch["label"]
        logits = self.infer(images)
        self.log(f"{stage}/loss", self.cross_entropy(logits, labels), batch_size=len(images), sync_dist=True)
        prediction = logits.argmax(1)
        metric.update(prediction, labels)
        return prediction

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._evaluate(batch, self.val_iou, "val")

    def test_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._evaluate(batch, self.test_iou, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        if "unreadable" in batch:  # ImageFolder's sample of a file it could not read: nothing to infer
            return {"name": batch["name"], "path": batch["path"], "unreadable": batch["unreadable"]}
        images = batch["image"]
        evaluation = self.evaluation.for_size(images.shape[-2:])
        if evaluation is not self.evaluation:
            (height, width), (crop_h, crop_w) = images.shape[-2:], evaluation.crop
            limit = f"evaluation.max_whole_pixels={self.evaluation.max_whole_pixels}"
            names = ", ".join(batch["name"])
            print(
                f"msccl: {names}: {height}x{width} pixels is more than {limit}: predicted in "
                f"{crop_h}x{crop_w} windows",
                file=sys.stderr,
            )
        prediction = evaluation(self, images).argmax(1)
        return {"name": batch["name"], "path": batch.get("path"), "prediction": prediction}

    # ---- metrics ------------------------------------------------------------------------------------
    def _log_iou(self, metric: SegmentationIoU, stage: str) -> dict[str, Tensor]:
        result = metric.compute()
        metric.reset()
        # compute() summed the confusion matrix over processes, so every rank logs the same values (and the
        # same keys); sync_dist averages identical values, which changes nothing but Lightning's DDP warning
        log = partial(self.log, sync_dist=True)
        log(f"{stage}/mIoU", result["mIoU"])
        log(f"{stage}/pixel_accuracy", result["pixel_accuracy"])
        for name, value in zip(self.class_names, result["iou"], strict=True):
            if not value.isnan():  # a class absent from targets and predictions has no IoU
                log(f"{stage}/IoU/{name}", value)
        for name, value in group_miou(result["iou"], self.class_groups).items():
            if not value.isnan():
                log(f"{stage}/mIoU/{name}", value)
        return result

    def on_validation_epoch_end(self) -> None:
        result = self._log_iou(self.val_iou, "val")
        if self.trainer.sanity_checking:
            return
        self.last_iou = result
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # during fit the table waits for on_fit_end
            self.print_iou_table("validation")

    def on_test_epoch_end(self) -> None:
        self.last_iou = self._log_iou(self.test_iou, "test")
        self.print_iou_table("test")

    def on_fit_end(self) -> None:
        if self.last_iou:
            self.print_iou_table(f"validation after {self.trainer.global_step} steps")

    def print_iou_table(self, title: str) -> None:
        table = format_iou_table(self.last_iou["iou"].cpu(), self.class_names, title, self.class_groups)
        # not `self.print`: once fit has closed the progress bars, it prints nothing at all
        if self.global_rank == 0:
            print("\n" + table + "\n", flush=True)

    # ---- optimisation -------------------------------------------------------------------------------
    def trainable_modules(self) -> list[torch.nn.Module]:
        return [self.net] if self.projection_heads is None else [self.net, self.projection_heads]

    def configure_optimizers(self) -> dict:
        groups = parameter_groups(self.trainable_modules(), self.decay_norms_and_biases, self.no_decay_rule)
        if self.optimizer is None:
            optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=5e-4)
        else:
            optimizer = self.optimizer(groups)
        factor = poly_with_warmup(
            int(self.trainer.estimated_stepping_batches),
            self.poly_power,
            self.warmup_steps,
            self.warmup_start_factor,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
