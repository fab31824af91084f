from __future__ import annotations

import math

import pytest
import torch

from msccl.training.metrics import SegmentationIoU, format_iou_table, group_miou, iou_from_confusion

IGNORE = 255


def test_iou_matches_a_hand_computed_confusion_matrix_with_ignore_pixels():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, IGNORE]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    metric = SegmentationIoU(num_classes=3, ignore_index=IGNORE)
    metric.update(pred[None], target[None])
    result = metric.compute()
    # by hand, ignore pixels dropped: class 0: tp 1, fp 1 (a 2 predicted 0), fn 1 -> 1/3
    # class 1: tp 2, fp 1, fn 0 -> 2/3; class 2: tp 1, fp 0, fn 1 -> 1/2
    expected = torch.tensor([1 / 3, 2 / 3, 1 / 2], dtype=torch.float64)
    assert torch.allclose(result["iou"], expected)
    assert math.isclose(result["mIoU"].item(), expected.mean().item())
    assert result["pixel_accuracy"].item() == pytest.approx(4 / 6)


def test_accumulates_over_the_split_not_a_mean_of_batches():
    metric = SegmentationIoU(num_classes=2, ignore_index=IGNORE)
    a_pred, a_target = torch.zeros(1, 1, 4, dtype=torch.long), torch.zeros(1, 1, 4, dtype=torch.long)
    b_pred, b_target = torch.tensor([[[1, 0]]]), torch.tensor([[[1, 1]]])
    metric.update(a_pred, a_target)
    metric.update(b_pred, b_target)
    # whole split: class 0 tp 4, fp 1 -> 0.8; class 1 tp 1, fn 1 -> 0.5
    assert torch.allclose(metric.compute()["iou"], torch.tensor([0.8, 0.5], dtype=torch.float64))


def test_logits_are_argmaxed_and_absent_classes_leave_the_mean():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 1, 0, 0] = 5.0  # pixel 0 -> class 1
    logits[0, 0, 0, 1] = 5.0  # pixel 1 -> class 0
    metric = SegmentationIoU(num_classes=3, ignore_index=IGNORE)
    metric.update(logits, torch.tensor([[[1, 0]]]))
    result = metric.compute()
    assert torch.isnan(result["iou"][2])
    assert result["mIoU"].item() == 1.0


def test_iou_from_confusion_and_table():
    confusion = torch.tensor([[3, 1], [0, 0]])
    iou = iou_from_confusion(confusion)
    assert torch.allclose(iou, torch.tensor([0.75, 0.0], dtype=torch.float64))
    table = format_iou_table(iou, ["road", "car"], title="val")
    assert "road" in table and "75.00" in table and "37.50" in table


def test_group_means_leave_absent_classes_out_and_appear_in_the_table():
    iou = torch.tensor([0.5, 0.25, float("nan"), 1.0], dtype=torch.float64)
    groups = {"anatomy": [0, 1], "rare": [2, 3]}
    means = group_miou(iou, groups)
    assert means["anatomy"].item() == pytest.approx(0.375) and means["rare"].item() == 1.0
    table = format_iou_table(iou, ["a", "b", "c", "d"], groups=groups)
    assert table.splitlines()[-2:] == ["mIoU anatomy   37.50", "mIoU rare     100.00"]
