"""Repeat-factor sampling (Gupta et al., LVIS, 2019): images with rare classes are seen more often.

Used for CaDIS, whose instrument classes appear in few frames (Pissas et al., MICCAI 2021, threshold
0.15). Per class c with image frequency f_c (share of training images that contain c), r_c =
max(1, sqrt(t / f_c)); an image repeats r_i = max over its classes of r_c times per epoch, the
fractional part by a coin flip drawn anew every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

__all__ = ["RepeatFactorSampler", "repeat_factors"]


def repeat_factors(class_presence: np.ndarray, threshold: float) -> np.ndarray:
    """Per-image repeat factors [N] from a boolean [N images, C classes] presence table."""
    if class_presence.ndim != 2 or len(class_presence) == 0:
        raise ValueError(
            f"class_presence must be [images, classes] with images > 0, got {class_presence.shape}"
        )
    frequency = class_presence.mean(0)
    class_factor = np.maximum(1.0, np.sqrt(threshold / np.maximum(frequency, 1e-12)))
    image_factor = np.where(class_presence, class_factor, 1.0).max(1)
    return image_factor


class RepeatFactorSampler(Sampler[int]):
    """Indices of one epoch: image i about `factors[i]` times, shuffled; deterministic from `seed`.

    Every epoch has the same length (round(sum of factors)): the stochastically rounded list is
    shuffled and trimmed or wrapped to it, so progress bars and LR schedules stay exact. Each call to
    `__iter__` advances the epoch (or call `set_epoch`): every DDP rank that builds the sampler with the
    same seed yields the same list, which Lightning's `DistributedSamplerWrapper` then splits by rank.
    """

    def __init__(self, factors: np.ndarray, seed: int = 0) -> None:
        self.factors = np.asarray(factors, dtype=np.float64)
        if self.factors.ndim != 1 or (self.factors < 1).any():
            raise ValueError("repeat factors must be a 1-D array of values >= 1")
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(round(self.factors.sum()))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        whole = np.floor(self.factors)
        repeats = (whole + (rng.random(len(self.factors)) < self.factors - whole)).astype(np.int64)
        indices = rng.permutation(np.repeat(np.arange(len(self.factors)), repeats))
        return iter(np.resize(indices, self.num_samples).tolist())
