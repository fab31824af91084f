"""The training pipeline of docs/method.md C3 and its pitfalls (docs/pitfalls.md: padding, interpolation)."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from msccl.data.base import IGNORE_INDEX
from msccl.data.sampling import ResumableDataLoader
from msccl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    ClassRatioRandomCrop,
    RandomRescale,
    largest_class_share,
    seed_pipeline,
    train_transform,
)


def _pipeline(seed: int, **kwargs) -> A.Compose:
    transform = train_transform(**{"crop_size": (48, 48), **kwargs})
    seed_pipeline(transform, seed)
    return transform


DARK, MID, BRIGHT = 90, 110, 130  # grey levels no colour jitter in [2/3, 1.5] can clip to 0 or 255


def _block_pattern(seed: int, height: int = 96, width: int = 128, block: int = 8):
    """Random 2-class blocks (some ignore); the image is BRIGHT grey on class 1, DARK on class 0, MID on
    ignore."""
    rng = np.random.default_rng(seed)
    classes = np.array([0, 1, IGNORE_INDEX], np.uint8)
    blocks = rng.choice(classes, (height // block, width // block), p=[0.45, 0.45, 0.1])
    label = np.kron(blocks, np.ones((block, block), np.uint8))
    image = np.choose(np.minimum(label, 2), [DARK, BRIGHT, MID]).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2), label


def _misaligned_pixels(image: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(clearly bright or dark labelled pixels, those whose label disagrees with the image)."""
    grey = image.mean(0) if image.shape[0] == 3 else image.mean(-1)
    labelled = mask != IGNORE_INDEX
    # brightness and contrast jitter are affine on grey pixels: the levels move, their order stays. A
    # pixel within 10% of the gap from a level is >= 80% that level in any blend (> 75%: its nearest
    # source pixel has that class); interpolated edges fall in between and are skipped.
    low, high = np.median(grey[mask == 0]), np.median(grey[mask == 1])
    bright = labelled & (grey > low + 0.9 * (high - low))
    dark = labelled & (grey < low + 0.1 * (high - low))
    return int(bright.sum() + dark.sum()), int((mask[bright] != 1).sum() + (mask[dark] != 0).sum())


@pytest.mark.parametrize("seed", range(12))
def test_image_and_label_stay_aligned_through_the_whole_pipeline(seed):
    # crop 48x48 of a 96x128 image rescaled by 0.5..2: no padding, every other step of docs/method.md C3
    image, label = _block_pattern(seed)
    out = _pipeline(seed)(image=image, mask=label)
    checked, wrong = _misaligned_pixels(out["image"].numpy(), out["mask"].numpy())
    assert checked > 500
    assert wrong == 0


def test_the_alignment_check_catches_a_flip_or_a_one_pixel_shift():
    image, label = _block_pattern(0)
    assert _misaligned_pixels(image, label)[1] == 0
    assert _misaligned_pixels(image, label[:, ::-1])[1] > 1000
    assert _misaligned_pixels(image, np.roll(label, 1, axis=1))[1] > 100


@pytest.mark.parametrize("seed", range(8))
def test_masks_never_get_interpolated_values(seed):
    rng = np.random.default_rng(seed)
    values = np.array([0, 3, 7, 18, IGNORE_INDEX], np.uint8)
    label = rng.choice(values, (40, 70))  # pixel noise: every resize would blend neighbours
    image = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    out = _pipeline(seed)(image=image, mask=label)
    assert set(np.unique(out["mask"].numpy()).tolist()) <= set(values.tolist()) | {IGNORE_INDEX}
    assert out["mask"].dtype == torch.uint8


def test_padding_is_ignore_in_the_label_and_black_in_the_image():
    # no rescale, crop larger than the image: padding on every side (docs/pitfalls.md: albumentations'
    # PadIfNeeded reflects by default and would fill masks with 0 = a real class)
    image = np.full((20, 30, 3), 200, np.uint8)
    label = np.full((20, 30), 4, np.uint8)
    unscaled = Augmentation(scale_range=(1, 1), aspect_range=(1, 1), colour_jitter=None)
    transform = _pipeline(0, crop_size=(40, 50), augmentation=unscaled)
    out = transform(image=image, mask=label)
    mask, normalised = out["mask"].numpy(), out["image"].numpy()
    assert mask.shape == (40, 50)
    assert (mask == 4).sum() == 20 * 30 and (mask == IGNORE_INDEX).sum() == 40 * 50 - 20 * 30
    mean, std = np.asarray(IMAGENET_MEAN)[:, None], np.asarray(IMAGENET_STD)[:, None]
    padded, content = normalised[:, mask == IGNORE_INDEX], normalised[:, mask == 4]
    np.testing.assert_allclose(padded, np.broadcast_to((0 - mean) / std, padded.shape), atol=1e-5)
    np.testing.assert_allclose(content, np.broadcast_to((200 / 255 - mean) / std, content.shape), atol=1e-5)


def test_rescale_draws_scale_and_aspect_within_their_ranges():
    rescale = RandomRescale((0.5, 2.0), (0.9, 1.1))
    rescale.set_random_seed(0)
    ratios = []
    for _ in range(200):
        out = rescale(image=np.zeros((100, 200, 3), np.uint8), mask=np.zeros((100, 200), np.uint8))
        height, width = out["image"].shape[:2]
        assert out["mask"].shape == (height, width)
        assert 50 <= height <= 200
        ratios.append(width / (2 * height))
    assert 0.89 < min(ratios) < 0.93 and 1.07 < max(ratios) < 1.11  # aspect jitter on the width only


def test_largest_class_share_ignores_ignore_pixels():
    mask = np.array([[0, 0, 0, 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]], np.uint8)
    assert largest_class_share(mask) == pytest.approx(0.75)
    assert largest_class_share(np.array([[2, 2, IGNORE_INDEX]], np.uint8)) == 1.0  # one class: never fine
    assert largest_class_share(np.full((2, 2), IGNORE_INDEX, np.uint8)) == 1.0


def _share_of_good_crops(crop: A.DualTransform, mask: np.ndarray, trials: int = 200) -> float:
    image = np.zeros((*mask.shape, 3), np.uint8)
    good = 0
    for _ in range(trials):
        out = crop(image=image, mask=mask)["mask"]
        assert out.shape == (16, 16)
        good += largest_class_share(out) < 0.75
    return good / trials


def test_crop_retries_to_keep_every_class_under_the_max_ratio():
    # class 1 is a 16-wide stripe at the right of a 16x96 label: a random 16x16 crop is fine (no class
    # >= 75%) only when it overlaps the stripe by more than 4 and less than 12 columns (7 of 81 starts)
    mask = np.zeros((16, 96), np.uint8)
    mask[:, 80:] = 1
    mask[:, 40:48] = IGNORE_INDEX  # ignore never counts, so it cannot make a crop "balanced"
    plain = A.RandomCrop(16, 16)
    plain.set_random_seed(0)
    rule = ClassRatioRandomCrop(16, 16, max_class_ratio=0.75, max_attempts=10)
    rule.set_random_seed(0)
    plain_share, rule_share = _share_of_good_crops(plain, mask), _share_of_good_crops(rule, mask)
    expected_single_draw = 7 / 81
    assert plain_share < 2 * expected_single_draw
    assert rule_share > 1 - (1 - expected_single_draw) ** 10 - 0.12  # ~0.59 with 10 attempts


def test_crop_keeps_the_last_draw_when_no_crop_can_satisfy_the_rule():
    crop = ClassRatioRandomCrop(8, 8, max_attempts=10)
    crop.set_random_seed(0)
    out = crop(image=np.zeros((20, 20, 3), np.uint8), mask=np.full((20, 20), 3, np.uint8))
    assert out["mask"].shape == (8, 8) and (out["mask"] == 3).all()


def test_seed_pipeline_gives_each_step_its_own_stream_and_reproduces():
    # A.Compose(seed=s) would give both flips the same stream: they would always agree
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    seed_pipeline(flips, 3)
    image = np.arange(4, dtype=np.uint8).reshape(2, 2)
    corners = [int(flips(image=image)["image"][0, 0]) for _ in range(40)]
    assert {1, 2} & set(corners)  # exactly one of the two flips happened at least once

    image, label = _block_pattern(1)
    first = _pipeline(5)(image=image, mask=label)
    second = _pipeline(5)(image=image, mask=label)
    other = _pipeline(6)(image=image, mask=label)
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["mask"], second["mask"])
    assert not torch.equal(first["image"], other["image"])


class _SameImage(Dataset):
    def __init__(self) -> None:
        self.image, self.label = _block_pattern(2)
        self.transform = _pipeline(0)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(image=self.image, mask=self.label)["image"]


def test_loader_workers_do_not_replay_the_same_augmentations():
    # albumentations' random state is copied into every worker: without reseeding, worker 0's first
    # sample and worker 1's first sample would be augmented identically (the training loader seeds
    # every sample's pipeline, msccl.data.sampling)
    loader = ResumableDataLoader(_SameImage(), batch_size=1, num_workers=2)
    first_of_worker_0, first_of_worker_1 = list(loader)[:2]
    assert not torch.equal(first_of_worker_0, first_of_worker_1)
