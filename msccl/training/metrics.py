"""Segmentation IoU from one confusion matrix accumulated over the whole split (docs/method.md C2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from msccl.labels import IGNORE_INDEX

__all__ = ["SegmentationIoU", "iou_from_confusion", "group_miou", "format_iou_table"]


def iou_from_confusion(confusion: Tensor) -> Tensor:
    """Per-class IoU from a [C, C] (target, prediction) confusion matrix.

    A class absent from both targets and predictions has no defined IoU: it is NaN and left out of the
    mean (torchmetrics' MulticlassJaccardIndex would give it 0 and drag the mean down).
    """
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    return torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)


class SegmentationIoU(MulticlassConfusionMatrix):
    """torchmetrics confusion matrix over pixels (ignore id excluded) that computes IoU.

    The single confusion-matrix state is summed across processes by torchmetrics, so mIoU, per-class
    IoU and any grouping of classes (e.g. CaDIS anatomy / instruments) agree under DDP.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """`preds`: [B, C, H, W] logits or [B, H, W] class ids; `target`: [B, H, W] train ids."""
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(1)
        super().update(preds, target)

    def compute(self) -> dict[str, Tensor]:
        iou = iou_from_confusion(self.confmat)
        total = self.confmat.sum()
        return {
            "mIoU": iou.nanmean(),
            "iou": iou,
            "pixel_accuracy": self.confmat.diagonal().sum() / total.clamp(min=1),
            "confusion": self.confmat.clone(),  # [C, C] pixels (target, prediction), for the figures
        }


def group_miou(iou: Tensor, groups: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
    """Mean IoU over each group of classes (e.g. CaDIS anatomy / instruments / rare), NaN classes left out."""
    return {name: iou[list(members)].nanmean() for name, members in groups.items()}


def format_iou_table(
    iou: Tensor,
    class_names: Sequence[str],
    title: str = "",
    groups: Mapping[str, Sequence[int]] | None = None,
) -> str:
    """A plain-text table of per-class IoU (in %), the mean over classes present, then group means."""
    group_rows = {f"mIoU {name}": value.item() for name, value in group_miou(iou, groups or {}).items()}
    width = max([len(name) for name in class_names] + [len(row) for row in group_rows] + [len("mIoU")])
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  IoU (%)")
    lines.append("-" * (width + 9))
    for name, value in zip(class_names, iou.tolist(), strict=True):
        lines.append(f"{name:<{width}}  {'n/a' if value != value else f'{100 * value:6.2f}'}")
    lines.append("-" * (width + 9))
    lines.append(f"{'mIoU':<{width}}  {100 * iou.nanmean().item():6.2f}")
    for name, value in group_rows.items():
        lines.append(f"{name:<{width}}  {'n/a' if value != value else f'{100 * value:6.2f}'}")
    return "\n".join(lines)
