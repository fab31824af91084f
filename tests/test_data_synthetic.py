from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from msccl.data import IGNORE_INDEX, SyntheticDataModule, SyntheticSegmentation
from msccl.data.synthetic import CONTEXT_CLASSES, FRAME_WIDTH, _context_image
from msccl.training.metrics import SegmentationIoU
from tests.conftest import SYNTHETIC_CONFIG


def test_same_seed_same_images_different_seed_different_images():
    a, b, c = (SyntheticSegmentation(4, 48, seed=s) for s in (3, 3, 4))
    for i in range(4):
        assert np.array_equal(a.generate(i)[0], b.generate(i)[0])
        assert np.array_equal(a.generate(i)[1], b.generate(i)[1])
        assert not np.array_equal(a.generate(i)[0], c.generate(i)[0])
    assert not np.array_equal(a.generate(0)[1], a.generate(1)[1])


@pytest.mark.parametrize("num_classes", [2, 5, 8])
def test_labels_stay_in_range_and_every_class_appears(num_classes):
    dataset = SyntheticSegmentation(40, 64, num_classes=num_classes, seed=1)
    labels = np.stack([dataset.generate(i)[1] for i in range(len(dataset))])
    values = set(np.unique(labels).tolist())
    assert values <= set(range(num_classes)) | {IGNORE_INDEX}
    assert values >= set(range(num_classes))
    assert IGNORE_INDEX in values


def test_objects_span_very_different_sizes():
    dataset = SyntheticSegmentation(40, 128, seed=0)
    wire_fractions = [np.mean(dataset.generate(i)[1] == 7) for i in range(len(dataset))]
    present = [f for f in wire_fractions if f > 0]
    assert present and np.median(present) < 0.02  # wires are a few pixels wide
    largest = max(np.mean(dataset.generate(i)[1] == c) for i in range(10) for c in range(1, 7))
    assert largest > 0.1


def test_samples_are_normalised_tensors_with_long_labels():
    sample = SyntheticSegmentation(1, 40, seed=0)[0]
    assert sample["image"].shape == (3, 40, 40) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (40, 40) and sample["label"].dtype == torch.int64
    assert -3 < sample["image"].mean() < 3


def test_datamodule_splits_differ_and_expose_class_facts():
    dm = SyntheticDataModule(num_classes=5, image_size=32, num_train=8, num_val=4, num_test=4, batch_size=4)
    dm.setup("fit")
    dm.setup("test")
    assert dm.num_classes == 5 and dm.class_names[0] == "background" and len(dm.palette) == 5
    train, val, test = (dm.datasets[s] for s in ("train", "val", "test"))
    assert not np.array_equal(train.generate(0)[0], val.generate(0)[0])
    assert not np.array_equal(val.generate(0)[0], test.generate(0)[0])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].shape == (4, 32, 32)


def test_bad_class_count_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticDataModule(num_classes=9)


def test_constant_prediction_on_the_demo_validation_split_scores_about_a_tenth():
    """The floor docs/getting-started.md compares the demo against: predicting "background" everywhere."""
    data_args = yaml.safe_load(SYNTHETIC_CONFIG.read_text())["data"]["init_args"]
    dm = SyntheticDataModule(**{**data_args, "num_workers": 0})
    dm.setup("fit")
    metric = SegmentationIoU(dm.num_classes)
    for batch in dm.val_dataloader():
        metric.update(torch.zeros_like(batch["label"]), batch["label"])
    result = metric.compute()
    background_iou = float(result["iou"][0])
    assert 0.7 < background_iou < 0.8 and torch.all(result["iou"][1:] == 0)
    assert 0.085 < float(result["mIoU"]) < 0.105  # docs/getting-started.md: 9.6%


# ---- layout "context": the class of an object is decided by a frame at least `context_margin` away ------
def test_context_layout_is_deterministic_and_has_both_object_classes_in_the_same_images():
    a, b = (SyntheticSegmentation(30, 64, layout="context", seed=2) for _ in range(2))
    assert a.classes == CONTEXT_CLASSES and a.context_margin == 8
    both = 0
    for i in range(len(a)):
        image, label = a.generate(i)
        again = b.generate(i)
        assert np.array_equal(image, again[0]) and np.array_equal(label, again[1])
        assert set(np.unique(label).tolist()) <= {0, 1, 2}
        both += {1, 2} <= set(np.unique(label).tolist())
    assert both >= 3  # regions framed in different colours, so both classes meet in one image
    assert not np.array_equal(
        a.generate(0)[0], SyntheticSegmentation(1, 64, layout="context", seed=3).generate(0)[0]
    )


def test_context_classes_are_pixel_identical_within_the_margin_so_only_far_context_separates_them():
    margin = 10
    renders = [
        _context_image(np.random.default_rng((5, 0)), (72, 96), margin, kinds) for kinds in ((0, 0), (1, 1))
    ]
    (red_image, red_label), (blue_image, blue_label) = renders
    objects = red_label > 0
    assert objects.sum() > 100
    # the same objects, of the red-frame class in one render and of the blue-frame class in the other
    assert np.array_equal(blue_label > 0, objects)
    assert (red_label[objects] == 1).all() and (blue_label[objects] == 2).all()
    # the renders differ only on the frames, and every object pixel is at least margin - FRAME_WIDTH + 1
    # pixels (max norm) from any frame pixel: every window of radius margin - FRAME_WIDTH around an object
    # pixel is the same in both, so no classifier that sees only such windows can tell the classes apart
    differs = (red_image != blue_image).any(-1)
    assert differs.any()
    frame_rows, frame_cols = np.nonzero(differs)
    object_rows, object_cols = np.nonzero(objects)
    distance = np.maximum(
        np.abs(object_rows[:, None] - frame_rows[None]), np.abs(object_cols[:, None] - frame_cols[None])
    ).min()
    assert distance >= margin - FRAME_WIDTH + 1


def test_context_datamodule_names_its_classes_and_refuses_the_objects_class_count():
    data = SyntheticDataModule(layout="context", num_train=2, num_val=2, num_test=2, image_size=32)
    assert data.num_classes == 3 and data.class_names[1:] == ("object_in_red_frame", "object_in_blue_frame")
    data.setup("fit")
    assert data.datasets["train"].layout == "context"
    with pytest.raises(ValueError, match=r"data.init_args.num_classes must be in 3..3 for layout 'context'"):
        SyntheticDataModule(layout="context", num_classes=8)
    with pytest.raises(ValueError, match="data.init_args.layout must be one of"):
        SyntheticDataModule(layout="frames")
