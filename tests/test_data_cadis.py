"""CaDIS: VideoXX layout and video split, tasks 1-3 pixel for pixel, repeat-factor sampling."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from msccl.data import CaDIS, CaDISSegmentation, DatasetError
from msccl.data.sampling import RepeatFactorSampler, repeat_factors
from tests.dataset_trees import cadis_tree, expected_train_ids, write_image

# docs/method.md C1, written out independently of msccl's tables
TASK_TRAIN_IDS = {
    1: {**{k: k for k in range(7)}, **{k: 7 for k in range(7, 36)}},
    2: {
        **{k: k for k in range(7)},
        **{k: 7 for k in (7, 8, 10, 20, 27, 32)},
        **{k: 8 for k in (9, 22)},
        **{k: 9 for k in (11, 33)},
        **{k: 10 for k in (12, 28)},
        **{k: 11 for k in (13, 21)},
        **{k: 12 for k in (14, 24)},
        **{k: 13 for k in (15, 18)},
        **{k: 14 for k in (16, 23)},
        17: 15,
        19: 16,
    },
    3: {k: k for k in range(25)},
}
SPLITS = {
    "train": [1, 3, 4, 6, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21, 23, 24, 25],
    "val": [5, 7, 16],
    "test": [2, 12, 22],
}


@pytest.fixture
def tree(tmp_path):
    return cadis_tree(tmp_path / "CaDIS", {video: 2 if video in (1, 5) else 1 for video in range(1, 26)})


def test_datamodule_finds_every_frame_of_the_video_split(tree):
    data = CaDIS(str(tree.root), num_workers=0)
    data.setup("fit")
    data.setup("test")
    for split, videos in SPLITS.items():
        pairs = data.datasets[split].pairs
        assert sorted((p.image, p.label) for p in pairs) == tree.pairs(split)
        assert {int(p.image.parent.parent.name.removeprefix("Video")) for p in pairs} == set(videos)
    assert data.datasets["train"].pairs[0].name == "Video1_frame000090"


@pytest.mark.parametrize("task", [1, 2, 3])
def test_task_label_maps_pixel_for_pixel(tree, task):
    dataset = CaDISSegmentation(tree.root, "val", task=task)
    for index, pair in enumerate(dataset.pairs):
        expected = expected_train_ids(tree.raw_label(pair.image), TASK_TRAIN_IDS[task])
        np.testing.assert_array_equal(dataset.load(index)[1], expected)
    ignored = {1: [], 2: [25, 26, 29, 30, 31, 34, 35], 3: list(range(25, 36))}[task]
    assert sorted(set(range(36)) - set(TASK_TRAIN_IDS[task])) == ignored


@pytest.mark.parametrize(
    ("task", "count", "last"),
    [(1, 8, "Instrument"), (2, 17, "Capsulorhexis Forceps"), (3, 25, "Lens Injector Handle")],
)
def test_task_class_names_palettes_and_groups(task, count, last):
    data = CaDIS("unused", task=task, num_workers=0)
    assert len(data.class_names) == count == len(set(data.palette)) and data.class_names[-1] == last
    assert data.class_names[:7] == (
        "Pupil",
        "Surgical Tape",
        "Hand",
        "Eye Retractors",
        "Iris",
        "Skin",
        "Cornea",
    )
    assert data.class_groups["anatomy"] == tuple(range(7))
    assert (
        data.class_groups["rare"]
        == {1: (2,), 2: (9, 10, 12, 14, 16), 3: (11, 12, 14, 16, 18, 19, 20, 21, 22, 23, 24)}[task]
    )


def test_video_split_is_configurable_and_must_not_overlap(tree):
    data = CaDIS(str(tree.root), train_videos=(1, 3), val_videos=(5,), test_videos=(2,), num_workers=0)
    data.setup("fit")
    assert len(data.datasets["train"]) == 3 and len(data.datasets["val"]) == 2
    with pytest.raises(ValueError, match=r"videos \[3\] are in both the train and val"):
        CaDIS(str(tree.root), train_videos=(1, 3), val_videos=(3,))


def test_missing_video_folder_is_named(tree):
    shutil.rmtree(tree.root / "Video07")
    with pytest.raises(DatasetError, match="Video07/Images does not exist") as error:
        CaDIS(str(tree.root), task=2, num_workers=0).setup("fit")
    assert "msccl data check --dataset cadis" in str(error.value) and "--task 2" in str(error.value)


def test_repeat_factors_follow_lvis():
    presence = np.zeros((10, 3), bool)
    presence[:, 0] = True  # everywhere: factor 1
    presence[:2, 1] = True  # in 20% of the images
    presence[0, 2] = True  # in 10%
    factors = repeat_factors(presence, threshold=0.15)
    np.testing.assert_allclose(factors[0], np.sqrt(0.15 / 0.1))  # max over its classes
    np.testing.assert_allclose(factors[1], 1.0)  # 0.2 > threshold: no repeat
    np.testing.assert_allclose(factors[2:], 1.0)
    np.testing.assert_allclose(repeat_factors(presence, threshold=0.8)[1], np.sqrt(0.8 / 0.2))


def test_repeat_factor_sampler_is_deterministic_and_oversamples():
    factors = np.array([1.0, 1.0, 3.5, 1.0])
    first, second = RepeatFactorSampler(factors, seed=7), RepeatFactorSampler(factors, seed=7)
    epochs = [list(first) for _ in range(200)]
    assert epochs[:3] == [list(second) for _ in range(3)]  # same seed, same epochs
    assert epochs[0] != epochs[1]  # the fractional repeat and the order change per epoch
    assert {len(epoch) for epoch in epochs} == {len(first)} == {round(factors.sum())}
    counts = np.bincount(np.concatenate(epochs), minlength=4) / len(epochs)
    np.testing.assert_allclose(counts, factors * len(first) / factors.sum(), rtol=0.1)


def test_repeat_factor_sampler_splits_across_ddp_ranks_through_lightning_wrapper():
    factors = np.linspace(1, 3, 20)
    ranks = [
        DistributedSamplerWrapper(RepeatFactorSampler(factors, seed=3), num_replicas=2, rank=r, shuffle=False)
        for r in (0, 1)
    ]
    parts = [list(sampler) for sampler in ranks]
    assert sorted(parts[0] + parts[1]) == sorted(RepeatFactorSampler(factors, seed=3))


def test_datamodule_uses_the_sampler_when_enabled(tree):
    # every training frame shows Pupil and Iris only, one also Hand: Hand is in 1 of 20 frames
    train = tree.samples["train"]
    for sample in train:
        write_image(sample.label, np.where(np.arange(64) < 32, 0, 4).astype(np.uint8)[None].repeat(32, 0))
    hand = np.full((32, 64), 4, np.uint8)
    hand[:8, :8] = 2
    write_image(train[3].label, hand)
    data = CaDIS(str(tree.root), repeat_factor_threshold=0.15, num_workers=0)
    data.setup("fit")
    sampler = data.train_dataloader().sampler.order  # the epoch order the resumable loader splits
    assert isinstance(sampler, RepeatFactorSampler)
    rare = [p.label for p in data.datasets["train"].pairs].index(train[3].label)
    expected = np.ones(len(train))
    expected[rare] = np.sqrt(0.15 / (1 / len(train)))
    np.testing.assert_allclose(sampler.factors, expected)
    assert CaDIS(str(tree.root), num_workers=0).train_sampler() is None
