"""Cityscapes: official layout, labelId -> trainId pixel for pixel, bad input, a short fit."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from msccl.cli import build_cli
from msccl.data import Cityscapes, CityscapesSegmentation, DatasetError
from msccl.data.cityscapes import train_ids_to_label_ids
from tests.dataset_trees import (
    HEIGHT,
    WIDTH,
    cityscapes_tree,
    expected_train_ids,
    tiny_fit_args,
    truncate,
    write_image,
)

# labelId -> trainId, written out from the official table (cityscapesScripts labels.py), not from msccl
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


@pytest.fixture
def tree(tmp_path):
    return cityscapes_tree(tmp_path / "cityscapes")


def test_datamodule_finds_every_pair_of_every_split(tree):
    data = Cityscapes(str(tree.root), test_split="test", num_workers=0)
    data.setup("fit")
    data.setup("test")
    for split in ("train", "val", "test"):
        assert sorted((p.image, p.label) for p in data.datasets[split].pairs) == tree.pairs(split)
    assert data.datasets["train"].pairs[0].name == "aachen_000000_000019"


def test_train_ids_follow_the_official_table_pixel_for_pixel(tree):
    for split in ("train", "val", "test"):
        dataset = CityscapesSegmentation(tree.root, split)
        for index, pair in enumerate(dataset.pairs):
            image, label = dataset.load(index)
            assert image.shape == (HEIGHT, WIDTH, 3) and label.dtype == np.uint8
            np.testing.assert_array_equal(
                label, expected_train_ids(tree.raw_label(pair.image), CITYSCAPES_TRAIN_IDS)
            )
    # the license plate (trainId -1, labelId -1 = 255 in 8 bits) and ids like 0, 1, 34-1 are ignore
    raw = tree.first().raw
    assert (dataset.label_map.apply(raw, "x")[np.isin(raw, [0, 6, 9, 30, 255])] == 255).all()


def test_validation_batches_carry_the_train_ids_unchanged(tree):
    data = Cityscapes(str(tree.root), num_workers=0, val_batch_size=2)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    pairs = data.datasets["val"].pairs
    expected = np.stack([expected_train_ids(tree.raw_label(p.image), CITYSCAPES_TRAIN_IDS) for p in pairs])
    assert torch.equal(batch["label"], torch.as_tensor(expected).long())
    assert batch["image"].shape == (2, 3, HEIGHT, WIDTH)


def test_augmentation_reproduces_per_seed_and_differs_across_ddp_ranks(tree):
    def first_training_sample(seed: int, rank: int) -> torch.Tensor:
        data = Cityscapes(str(tree.root), crop_size=32, num_workers=0)
        data.trainer = SimpleNamespace(global_rank=rank)  # what Lightning attaches under DDP
        torch.manual_seed(seed)  # as seed_everything does on every rank
        data.setup("fit")
        return data.datasets["train"][0]["image"]

    assert torch.equal(first_training_sample(0, rank=0), first_training_sample(0, rank=0))
    assert not torch.equal(first_training_sample(0, rank=0), first_training_sample(0, rank=1))
    assert not torch.equal(first_training_sample(0, rank=0), first_training_sample(1, rank=0))


def test_class_names_palette_and_the_inverse_map_for_submissions():
    assert (
        CityscapesSegmentation.class_names[0] == "road"
        and CityscapesSegmentation.class_names[-1] == "bicycle"
    )
    assert len(CityscapesSegmentation.palette) == 19 and CityscapesSegmentation.palette[0] == (128, 64, 128)
    assert Cityscapes.class_names == CityscapesSegmentation.class_names
    train_ids = np.array([[0, 5, 18, 255]], np.uint8)
    inverse = {train_id: label_id for label_id, train_id in CITYSCAPES_TRAIN_IDS.items()}
    np.testing.assert_array_equal(
        train_ids_to_label_ids(train_ids), [[inverse[0], inverse[5], inverse[18], 0]]
    )
    every = np.arange(19, dtype=np.uint8)
    np.testing.assert_array_equal(
        CityscapesSegmentation.label_map.apply(train_ids_to_label_ids(every), "x"), every
    )


def _plant(tree, problem: str):
    """Damage the tree; returns the file (or folder) the error must name."""
    sample = tree.first()
    if problem == "missing split folder":
        shutil.rmtree(tree.root / "gtFine" / "val")
        return tree.root / "gtFine" / "val"
    if problem == "image without label":
        sample.label.unlink()
        return sample.image
    if problem == "corrupt image":
        sample.image.write_bytes(b"not a png at all")
        return sample.image
    if problem == "truncated image":
        truncate(sample.image)
        return sample.image
    if problem == "label values outside the map":
        write_image(sample.label, np.full((HEIGHT, WIDTH), 40, np.uint8))
        return sample.label
    if problem == "size mismatch":
        write_image(sample.label, np.full((HEIGHT // 2, WIDTH // 2), 7, np.uint8))
        return sample.label
    if problem == "colour label":
        write_image(
            sample.label, np.random.default_rng(0).integers(0, 34, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        )
        return sample.label
    raise ValueError(problem)


SETUP_PROBLEMS = ["missing split folder", "image without label"]
READ_PROBLEMS = [
    "corrupt image",
    "truncated image",
    "label values outside the map",
    "size mismatch",
    "colour label",
]


def test_missing_root_is_named(tmp_path):
    with pytest.raises(DatasetError, match="does_not_exist"):
        Cityscapes(str(tmp_path / "does_not_exist"), num_workers=0).setup("fit")


@pytest.mark.parametrize("problem", SETUP_PROBLEMS)
def test_pairing_problems_stop_setup_naming_the_file(tree, problem):
    named = _plant(tree, problem)
    data = Cityscapes(str(tree.root), num_workers=0)
    with pytest.raises(DatasetError) as error:
        data.setup("fit")
    assert str(named) in str(error.value)
    assert "msccl data check --dataset cityscapes" in str(error.value)


@pytest.mark.parametrize("problem", READ_PROBLEMS)
def test_bad_files_fail_when_read_naming_the_file(tree, problem):
    named = _plant(tree, problem)
    dataset = CityscapesSegmentation(tree.root, "train")  # pairing is fine: found on read
    with pytest.raises(DatasetError) as error:
        dataset[0]
    assert str(named) in str(error.value)
    assert "msccl data check --dataset cityscapes" in str(error.value)


def test_short_fit_from_the_config(tree, in_tmp_dir):
    cli = build_cli(tiny_fit_args("cityscapes.yaml", tree.root))
    assert cli.trainer.global_step == 2
    assert cli.model.num_classes == 19 and cli.model.class_names[0] == "road"
    assert list(in_tmp_dir.glob("runs/**/last.ckpt"))


@pytest.mark.parametrize("problem", ["image without label", "truncated image"])
def test_a_bad_file_stops_training_before_any_step(tree, in_tmp_dir, problem):
    named = _plant(tree, problem)
    with pytest.raises(DatasetError, match="msccl data check") as error:
        build_cli(tiny_fit_args("cityscapes.yaml", tree.root, "--data.init_args.batch_size=4"))
    assert str(named) in str(error.value)
    assert not list(in_tmp_dir.glob("runs/**/*.ckpt"))
