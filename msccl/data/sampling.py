"""Training order: repeat-factor sampling, and an order and augmentation that survive interruption.

Repeat-factor sampling (Gupta et al., LVIS, 2019): images with rare classes are seen more often. Used
for CaDIS, whose instrument classes appear in few frames (Pissas et al., MICCAI 2021, threshold 0.15).
Per class c with image frequency f_c (share of training images that contain c), r_c =
max(1, sqrt(t / f_c)); an image repeats r_i = max over its classes of r_c times per epoch, the
fractional part by a coin flip drawn anew every epoch.

Resumable order (`ResumableDataLoader`): a plain shuffled DataLoader restarts a resumed epoch from a
fresh random order, and its augmentations from fresh draws, so a resumed run trains on other batches
than the interrupted one would have. Here
- the order of epoch e is a function of (seed, e): a permutation, or a `RepeatFactorSampler` list;
  it is split across DDP ranks like `DistributedSampler` splits (Lightning keeps that sampler as is);
- each sample's albumentations pipeline is seeded from (seed, e, position in the epoch): every repeat
  of an image is augmented differently, the same whichever worker or rank loads it;
- the loader counts the batches it has handed out in the epoch; that position travels in checkpoints,
  and a resumed epoch skips the batches already trained on.
Transforms must draw from their albumentations generators (`self.random_generator`, `self.py_random`),
as albumentations' own transforms do; one that uses numpy's or Python's global generator is not
reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import albumentations as A
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from msccl.data.transforms import seed_pipeline

__all__ = ["EpochSampler", "RepeatFactorSampler", "ResumableDataLoader", "SeededTransforms", "repeat_factors"]


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
    same seed yields the same list; `EpochSampler` (or Lightning's `DistributedSamplerWrapper`) splits it
    by rank.
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


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at `position` of epoch `epoch`'s order."""
    return int(np.random.SeedSequence([seed % 2**64, epoch, position]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """This rank's share of epoch e's order (`set_epoch(e)`), each index paired with its augmentation
    seed, starting `start` samples into the share (then from the beginning again).

    The order is a permutation drawn from (seed, e), or the list `order` (e.g. a `RepeatFactorSampler`)
    gives for epoch e. Like `DistributedSampler`, the list is padded with its first indices to equal
    shares and rank r takes positions r, r + world, ...
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int = 0,
        order: Sampler[int] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        """`num_replicas` and `rank` default to the process group's (1 and 0 without one)."""
        distributed = dist.is_available() and dist.is_initialized()
        world_size = num_replicas or (dist.get_world_size() if distributed else 1)
        rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.order = order
        if order is not None:
            self.num_samples = math.ceil(len(order) / world_size)
            self.total_size = self.num_samples * world_size
        self.start = 0

    def epoch_order(self) -> list[int]:
        """The whole epoch's indices, before the split across ranks."""
        if self.order is None:
            generator = torch.Generator().manual_seed((self.seed + self.epoch) % 2**64)
            return torch.randperm(len(self.dataset), generator=generator).tolist()
        self.order.set_epoch(self.epoch)
        return list(self.order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order()
        padding = self.total_size - len(order)
        order += (order * math.ceil(padding / len(order)))[:padding] if padding > 0 else []
        start, self.start = self.start, 0
        for position in range(self.rank + start * self.num_replicas, self.total_size, self.num_replicas):
            yield order[position], sample_seed(self.seed, self.epoch, position)


class SeededTransforms(Dataset):
    """`dataset[index]` with the dataset's albumentations pipeline seeded by the sampler's seed."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        transform = getattr(self.dataset, "transform", None)
        if isinstance(transform, A.Compose):
            seed_pipeline(transform, seed)
        return self.dataset[index]


class ResumableDataLoader(DataLoader):
    """The training loader: (seed, epoch)-determined batches and augmentations, resumable mid-epoch.

    `state_dict()` = {"epoch", "batches"} (batches handed out in that epoch); `load_state_dict` makes
    the next iteration continue from there. Lightning saves and restores it with the fit loop (and
    `SegmentationDataModule` through its own state, see there). The last incomplete batch is dropped: a
    batch of one breaks BatchNorm in training.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        order: Sampler[int] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            SeededTransforms(dataset),
            batch_size=batch_size,
            sampler=EpochSampler(dataset, seed=seed, order=order),
            drop_last=True,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # worker seeds from the loader's own generator: iterating never draws from torch's global
            # generator, which the model's dropout uses
            generator=torch.Generator().manual_seed(seed),
        )
        self.batches = 0

    def __iter__(self) -> Iterator[Any]:
        self.batches = self.sampler.start // self.batch_size
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, batches = state_dict["epoch"], state_dict["batches"]
        if batches >= len(self):  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.start = batches * self.batch_size
        self.batches = batches
