"""Pictures: the evaluation figures every validate / test / fit leaves in its run directory (their values
the metric's confusion matrix), and `msccl plot`'s learning curves."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from msccl.cli import build_cli, main
from msccl.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE
from msccl.plots.curves import panels_for, read_metrics
from msccl.plots.figures import confusion_figure, iou_figure, read_confusion_csv
from msccl.plots.legend import add_legend, present_classes
from msccl.training.callbacks import EvaluationFigures
from msccl.training.metrics import SegmentationIoU
from tests.conftest import TINY_SYNTHETIC, quiet_trainer


def assert_picture(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The PNG decodes, has `size` (width, height) when given, and is not blank."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} does not decode"
    if size is not None:
        assert (image.shape[1], image.shape[0]) == size
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 16, f"{path} is (nearly) blank"
    return image


def figure_size(figure) -> tuple[int, int]:
    width, height = figure.get_size_inches() * 100  # figures are saved at 100 dpi
    return round(width), round(height)


def test_validate_and_test_pictures_show_the_metrics_confusion_matrix(in_tmp_dir):
    validate = build_cli(["validate", *TINY_SYNTHETIC])  # random weights: any predictions will do
    run_dir, names = validate.run_dir, validate.model.class_names
    counts_names, counts = read_confusion_csv(run_dir / "val_confusion.csv")
    assert counts_names == list(names)
    # the same confusion matrix computed here, directly from the model's predictions on the same batches
    metric = SegmentationIoU(len(names))
    model = validate.model.eval()
    with torch.no_grad():
        for batch in itertools.islice(validate.datamodule.val_dataloader(), 2):  # limit_val_batches=2
            metric.update(model.infer(batch["image"]), batch["label"])
    assert np.array_equal(counts, metric.confmat.numpy()) and counts.sum() > 0
    assert_picture(run_dir / "val_confusion.png", figure_size(confusion_figure(counts, names)))
    iou = metric.compute()["iou"].numpy()
    assert_picture(run_dir / "val_iou.png", figure_size(iou_figure(iou, names)))

    test_dir = in_tmp_dir / "test_run"
    trainer = quiet_trainer(callbacks=[EvaluationFigures()], default_root_dir=test_dir, limit_test_batches=1)
    trainer.test(model, datamodule=validate.datamodule)
    assert_picture(test_dir / "test_confusion.png")
    assert_picture(test_dir / "test_iou.png")
    assert not list(test_dir.glob("val_*"))


def test_fit_ends_with_pictures_and_msccl_plot_draws_its_curves(in_tmp_dir):
    fit = build_cli(
        ["fit", *TINY_SYNTHETIC, "--trainer.limit_train_batches=2", "--trainer.num_sanity_val_steps=0"]
    )
    for kind in ("confusion.png", "iou.png", "confusion.csv"):  # of the last validation
        assert (fit.run_dir / f"val_{kind}").is_file()
    metrics = read_metrics(fit.run_dir)
    assert np.isfinite(metrics["train/contrastive/embedding/s0/same"][1]).all()
    titles = {panel.title for panel in panels_for(list(metrics))}
    expected = {
        "total loss",
        "ce",
        "learning rate",
        "validation mIoU",
        "embedding s0: mean cosine similarity",
    }
    assert expected <= titles
    assert all(panel.ylabel for panel in panels_for(list(metrics))), "every panel says what its y axis is"
    other = in_tmp_dir / "other_run"  # two runs on shared axes
    shutil.copytree(fit.run_dir, other)
    with pytest.raises(SystemExit) as done:
        main(["plot", str(fit.run_dir), str(other), "--output", "curves.png"])
    assert done.value.code == 0
    assert_picture(in_tmp_dir / "curves.png")


def test_plot_names_a_folder_without_metrics(in_tmp_dir, capsys):
    (in_tmp_dir / "empty").mkdir()
    with pytest.raises(SystemExit) as done:
        main(["plot", "empty", "--output", "curves.png"])
    assert done.value.code == 2
    assert "empty has no metrics.csv" in capsys.readouterr().err
    assert not (in_tmp_dir / "curves.png").exists()


def test_the_overlay_legend_names_the_classes_present_in_their_colours():
    palette = np.array(SYNTHETIC_PALETTE, np.uint8)
    names = [c.name for c in SYNTHETIC_CLASSES]
    label = np.full((30, 20), 255, np.uint8)  # ignore: never listed
    label[:20] = 6
    label[20:, :5] = 3
    assert present_classes(label, len(names)) == [6, 3]  # the most pixels first
    picture = np.zeros((30, 20, 3), np.uint8)
    shown = add_legend(picture, label, names, palette)
    assert np.array_equal(shown[:30, :20], picture)  # the image untouched, at the top left
    assert shown.shape[1] > 20  # widened to fit "square" and "checker"
    band = shown[30:].reshape(-1, 3)
    colours = {tuple(c) for c in band.tolist()}
    assert tuple(palette[6]) in colours and tuple(palette[3]) in colours  # their swatches
    assert not any(tuple(palette[c]) in colours for c in (0, 1, 2, 4, 5, 7))  # no other class's
    assert add_legend(picture, np.full((30, 20), 255, np.uint8), names, palette).shape == picture.shape
    # the synthetic classes share image colours in pairs; their label colours are all distinct
    assert len(set(SYNTHETIC_PALETTE)) == len(SYNTHETIC_CLASSES)
