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
- the loader counts the batches it has handed out in the epoch; that position travels in checkpoints in
  samples of the epoch's order (batches x batch size x processes), and a resumed epoch continues at the
  next unseen sample.

What may change between a save and a resume: the batch size and the number of processes, so long as
their product (the samples of one step of all ranks together, before accumulation) stays the same when
the checkpoint is mid-epoch: then every rank continues exactly at the next unseen sample, rank r taking
positions `samples + r`, `samples + r + processes`, ... (the one order of the epoch, split anew), each
sample with its own augmentation seed, and one line says so. Other sizes are refused mid-epoch, naming
the settings (Lightning counts the epoch's batches, and would count the old ones in the new size); a
checkpoint at an epoch's end starts the next epoch with any sizes, and so does a position whose epoch the
trainer has left (an epoch cut short by `limit_train_batches`). Gradient accumulation plays no part: it
groups the same batches into optimiser steps, so changing it changes neither the order nor the position.
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
from lightning.pytorch.utilities import rank_zero_info
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
    seed, starting `start` samples into the epoch's order (all ranks' shares together; then from the
    beginning again).

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
        self.start_epoch: int | None = None  # the epoch `start` belongs to (None: any)

    def pending_start(self) -> int:
        """Where the next iteration starts: `start` if it is `start_epoch`'s, else at the beginning (the
        trainer moved on to another epoch, e.g. the checkpoint ended an epoch cut by limit_train_batches)."""
        return self.start if self.start_epoch in (None, self.epoch) else 0

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
        start, self.start = self.pending_start(), 0
        for position in range(start + self.rank, self.total_size, self.num_replicas):
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

    `state_dict()` = {"epoch", "samples" (of the epoch's order handed out, all ranks together),
    "batch_size", "processes"}; `load_state_dict` makes the next iteration continue from there, or
    refuses a mid-epoch position that other sizes cannot continue (module docstring). Lightning saves and
    restores it with the fit loop (and `SegmentationDataModule` through its own state, see there). The last
    incomplete batch is dropped: a batch of one breaks BatchNorm in training.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        order: Sampler[int] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        """`num_replicas` and `rank` default to the process group's (see `EpochSampler`)."""
        super().__init__(
            SeededTransforms(dataset),
            batch_size=batch_size,
            sampler=EpochSampler(dataset, seed=seed, order=order, num_replicas=num_replicas, rank=rank),
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
        self.batches = self.sampler.pending_start() // self._samples_per_batch
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    @property
    def _samples_per_batch(self) -> int:
        """Samples of the epoch's order one batch of every rank takes together."""
        return self.batch_size * self.sampler.num_replicas

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.sampler.epoch,
            "samples": self.batches * self._samples_per_batch,
            "batch_size": self.batch_size,
            "processes": self.sampler.num_replicas,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, samples = state_dict["epoch"], state_dict["samples"]
        saved = (state_dict["batch_size"], state_dict["processes"])
        now = (self.batch_size, self.sampler.num_replicas)
        length = len(self.sampler.order if self.sampler.order is not None else self.sampler.dataset)
        if samples >= _epoch_samples(length, *saved):
            epoch, samples = epoch + 1, 0  # saved at the end of an epoch: the next one starts afresh
        elif samples and saved != now:
            if saved[0] * saved[1] != now[0] * now[1]:
                raise ValueError(
                    f"the checkpoint stopped {samples} samples into epoch {epoch} with "
                    f"batch_size={saved[0]} on {saved[1]} processes ({saved[0] * saved[1]} samples per step "
                    f"of all ranks); this run has data.init_args.batch_size={now[0]} on {now[1]} "
                    "(trainer.devices x num_nodes): "
                    f"keep batch_size x processes = {saved[0] * saved[1]}, or resume from a checkpoint saved "
                    "at the end of an epoch"
                )
            rank_zero_info(
                f"msccl: resuming epoch {epoch} at sample {samples} of its order, with "
                f"batch_size={now[0]} on {now[1]} processes (saved with {saved[0]} on {saved[1]}): the same "
                "samples per step"
            )
        self.sampler.set_epoch(epoch)
        self.sampler.start, self.sampler.start_epoch = samples, epoch
        self.batches = samples // self._samples_per_batch


def _epoch_samples(length: int, batch_size: int, processes: int) -> int:
    """Samples of an epoch order of `length` (padded to equal shares) that full batches of all ranks take."""
    return math.ceil(length / processes) // batch_size * batch_size * processes
