"""ADE20K: ADEChallengeData2016 layout, zero label reduced exactly once, bad input, a short fit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from msccl.cli import build_cli
from msccl.data import ADE20K, ADE20KSegmentation, DatasetError
from tests.dataset_trees import ade20k_tree, expected_train_ids, tiny_fit_args, truncate, write_image

REDUCE_ZERO = {k: k - 1 for k in range(1, 151)}  # raw 0 ("other") -> ignore, k -> k - 1


@pytest.fixture
def tree(tmp_path):
    return ade20k_tree(tmp_path / "data")


@pytest.mark.parametrize("root_level", ["parent", "ADEChallengeData2016"])
def test_datamodule_finds_every_pair_from_either_root(tree, root_level):
    root = tree.root if root_level == "parent" else tree.root / "ADEChallengeData2016"
    data = ADE20K(str(root), num_workers=0)
    data.setup("fit")
    data.setup("test")
    for split in ("train", "val"):
        assert sorted((p.image, p.label) for p in data.datasets[split].pairs) == tree.pairs(split)
    assert len(data.datasets["test"]) == len(tree.samples["val"])  # test evaluates val
    assert data.datasets["train"].pairs[0].name == "ADE_train_00000001"


def test_zero_label_is_reduced_exactly_once_pixel_for_pixel(tree):
    data = ADE20K(str(tree.root), num_workers=0)
    data.setup("validate")
    dataset = data.datasets["val"]
    for index, pair in enumerate(dataset.pairs):
        raw = tree.raw_label(pair.image)
        expected = expected_train_ids(raw, REDUCE_ZERO)
        np.testing.assert_array_equal(dataset.load(index)[1], expected)
        np.testing.assert_array_equal(dataset[index]["label"].numpy(), expected)  # the loader adds nothing
        assert (expected[raw == 1] == 0).all() and (expected[raw == 0] == 255).all()


def test_class_names_and_standard_palette():
    assert ADE20K.class_names == ADE20KSegmentation.class_names
    assert len(ADE20K.class_names) == 150 == len(ADE20K.palette)  # the standard palette repeats one grey
    assert ADE20K.class_names[:3] == ("wall", "building", "sky") and ADE20K.class_names[-1] == "flag"
    assert ADE20K.class_names[7] == "bed"  # no stray whitespace
    assert ADE20K.palette[0] == (120, 120, 120) and ADE20K.palette[-1] == (92, 0, 255)


def test_validation_images_of_different_sizes_batch_one_at_a_time(tree):
    sample = tree.first("val")
    write_image(sample.image, np.zeros((40, 24, 3), np.uint8))
    write_image(sample.label, np.ones((40, 24), np.uint8))
    data = ADE20K(str(tree.root), num_workers=0)
    data.setup("validate")
    shapes = {tuple(batch["label"].shape) for batch in data.val_dataloader()}
    assert shapes == {(1, 32, 64), (1, 40, 24)}


def test_truncated_jpeg_and_missing_split_folder_are_named(tree):
    sample = tree.first("train")
    truncate(sample.image)
    dataset = ADE20KSegmentation(tree.root, "train")
    index = [p.image for p in dataset.pairs].index(sample.image)
    with pytest.raises(DatasetError, match=str(sample.image)):
        dataset[index]
    shutil.rmtree(tree.root / "ADEChallengeData2016" / "annotations" / "validation")
    with pytest.raises(DatasetError, match="annotations/validation"):
        ADE20K(str(tree.root), num_workers=0).setup("fit")


def test_label_value_above_150_is_outside_the_map(tree):
    sample = tree.first("train")
    write_image(sample.label, np.full((32, 64), 151, np.uint8))
    dataset = ADE20KSegmentation(tree.root, "train")
    index = [p.label for p in dataset.pairs].index(sample.label)
    with pytest.raises(DatasetError, match=r"values \[151\] outside the label map"):
        dataset.load(index)


def test_short_fit_from_the_config(tree, in_tmp_dir):
    cli = build_cli(tiny_fit_args("ade20k.yaml", tree.root, "--data.init_args.val_batch_size=1"))
    assert cli.trainer.global_step == 2 and cli.model.num_classes == 150
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def test_a_split_the_release_does_not_have_is_rejected():
    with pytest.raises(ValueError, match="data.test_split must be one of train, val for ade20k"):
        ADE20K("unused", test_split="test")
