"""A training order and augmentation that are functions of (seed, epoch) and survive interruption.

A plain shuffled DataLoader restarts a resumed epoch from a fresh random order, and albumentations
draws its augmentations from an unseeded generator of its own (the same one copied into every worker),
so a resumed run, or even a rerun with the same seed, trains on other batches. Here:
- the order of epoch e is the permutation `DistributedSampler` draws from (seed, e), sharded over
  ranks (Lightning keeps a `DistributedSampler` as it is);
- each sample's transform is seeded from (seed, epoch, index), whatever worker loads it;
- the loader counts the batches it has handed out; Lightning stores `state_dict()` in checkpoints and
  calls `load_state_dict()` before iterating a resumed epoch, which then skips the batches already
  trained on.
Transforms must draw from their albumentations generators (`self.random_generator`, `self.py_random`),
as albumentations' own transforms do; a transform that uses numpy's or Python's global generator is
not reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["EpochSampler", "SeededTransforms", "ResumableDataLoader"]


class EpochSampler(DistributedSampler):
    """Shuffled indices of epoch `set_epoch(e)`, paired with a per-sample transform seed; starts
    `start` samples into the epoch (then from the beginning again)."""

    def __init__(self, dataset: Dataset, seed: int = 0, shuffle: bool = True) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        world_size, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        for index in indices[start:]:
            yield index, sample_seed(self.seed, self.epoch, index)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededTransforms(Dataset):
    """`dataset[index]` with the dataset's albumentations `transform` seeded by the sampler's seed."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        return self.dataset[index]


class ResumableDataLoader(DataLoader):
    """The training loader: (seed, epoch)-determined batches and augmentations, resumable mid-epoch.

    `state_dict()` = {"epoch", "batches"} (batches handed out in that epoch); Lightning saves it in
    every checkpoint (the fit loop's `combined_loader` state) and restores it before iterating.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        drop_last: bool = True,
    ) -> None:
        super().__init__(
            SeededTransforms(dataset),
            batch_size=batch_size,
            sampler=EpochSampler(dataset, seed=seed),
            drop_last=drop_last,
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
