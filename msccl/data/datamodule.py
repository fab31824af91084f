"""LightningDataModules: the shared loader logic, the built-in synthetic dataset, and the base of the
datasets read from files (one module per dataset: `cityscapes.py`, `ade20k.py`, ...)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from msccl.data.base import FileSegmentation, ImageFolder, Transform
from msccl.data.sampling import RepeatFactorSampler, ResumableDataLoader, repeat_factors
from msccl.data.synthetic import SYNTHETIC_PALETTE, SyntheticSegmentation, synthetic_classes
from msccl.data.transforms import Augmentation, eval_transform, flip_transform, seed_pipeline, train_transform
from msccl.labels import IGNORE_INDEX
from msccl.progress import progress

__all__ = ["FileDataModule", "SegmentationDataModule", "SyntheticDataModule", "default_num_workers"]

SPLITS = ("train", "val", "test")


class SegmentationDataModule(L.LightningDataModule):
    """Loaders for train/val/test (and predict from a folder); subclasses say what the data is.

    Subclasses set `class_names` and `palette` and implement `build_dataset(split)`; they may set
    `class_groups` (name -> class ids, e.g. CaDIS anatomy / instruments / rare) whose mean IoU is
    reported next to the mIoU.
    """

    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    class_groups: dict[str, tuple[int, ...]] = {}
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        predict_dir: str | None = None,
    ) -> None:
        """`pin_memory=None` pins when CUDA is available; workers persist between epochs."""
        super().__init__()
        for key, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"data.init_args.{key} must be 1 or more, got {value}")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.predict_dir = predict_dir
        self.datasets: dict[str, Dataset] = {}
        self._train_position: dict[str, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}[stage]
        for split in needed:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)
        if stage == "predict":
            if self.predict_dir is None:
                raise ValueError("predicting needs a folder of images: set --data.predict_dir")
            self.datasets["predict"] = ImageFolder(self.predict_dir, eval_transform())

    def train_sampler(self) -> Sampler[int] | None:
        """The order of a training epoch (a sampler with `set_epoch`); None: a uniform permutation."""
        return None

    def train_dataloader(self) -> DataLoader:
        # order and augmentation fixed by (run seed, epoch), resumable mid-epoch (msccl.data.sampling);
        # the run's seed is identical on every DDP rank under seed_everything
        loader = ResumableDataLoader(
            self.datasets["train"],
            self.batch_size,
            seed=torch.initial_seed(),
            order=self.train_sampler(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )
        if self._train_position is not None:
            loader.load_state_dict(self._train_position)
            self._train_position = None
        return loader

    # The training loader's position also travels through the data module's state: Lightning restores
    # the data module before it first builds the loaders, but restores a loader's own state only when
    # the loader is built after the checkpoint is loaded, which is not the case when
    # `configure_optimizers` asks for `trainer.estimated_stepping_batches` (the poly schedule does).
    def state_dict(self) -> dict[str, Any]:
        loader = self.trainer.train_dataloader if self.trainer is not None else None
        return {"train_position": loader.state_dict()} if isinstance(loader, ResumableDataLoader) else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_position = state_dict.get("train_position")

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        """An evaluation loader: every sample once, in order."""
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", 1)  # one image at a time: sizes may differ


class SyntheticDataModule(SegmentationDataModule):
    """The built-in procedural dataset (see `msccl.data.synthetic`): no files, deterministic per seed.

    `layout` "objects" (default) scatters 2..8 classes that pairs of cues separate; "context" has 3
    classes, two of which only context beyond `context_margin` pixels separates (`SyntheticSegmentation`).
    `num_classes` defaults to all of the layout's classes.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        image_size: int = 128,
        num_train: int = 512,
        num_val: int = 64,
        num_test: int = 64,
        seed: int = 0,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        predict_dir: str | None = None,
        layout: str = "objects",
        context_margin: int | None = None,
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, pin_memory, predict_dir)
        try:
            classes = synthetic_classes(layout, num_classes)
        except ValueError as error:
            raise ValueError(f"data.init_args.{error}") from None
        self.class_names = tuple(c.name for c in classes)
        self.palette = SYNTHETIC_PALETTE[: len(classes)]  # one colour per class (the image colours repeat)
        self.layout, self.context_margin = layout, context_margin
        self.image_size = image_size
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.seed = seed

    def build_dataset(self, split: str) -> Dataset:
        # each split its own seed stream, so val/test images never repeat training images
        return SyntheticSegmentation(
            self.sizes[split],
            self.image_size,
            self.num_classes,
            seed=self.seed * len(SPLITS) + SPLITS.index(split),
            transform=flip_transform() if split == "train" else eval_transform(),
            layout=self.layout,
            context_margin=self.context_margin,
        )


def default_num_workers() -> int:
    """Loader processes per training process: the usable CPUs shared among the visible GPUs (one
    training process each under DDP), at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus // max(1, torch.cuda.device_count())))


class FileDataModule(SegmentationDataModule):
    """A dataset read from its publisher's layout under `root`, trained with the paper's pipeline.

    Subclasses name their `dataset_class` (layout, label map) and set `class_names` and `palette` (from
    the dataset's). Training images get `train_transform` (the paper's pipeline), validation and test images
    normalisation only. Building the datasets (in `setup`) checks the layout and pairing of every needed
    split before any step; each sample is checked when read. Either way the error names the file and
    says to run `msccl data check`.

    Args:
        root: the dataset folder exactly as shipped.
        crop_size: training crop, (height, width) or one int for a square.
        augmentation: rescale, crop, flip and colour jitter of the training images
            (`msccl.data.transforms.Augmentation`); default: the paper's.
        test_split: the split `msccl test` evaluates.
        repeat_factor_threshold: repeat-factor sampling of images with rare classes (LVIS) with this
            threshold (e.g. 0.15); null shuffles uniformly. Deterministic from the run's seed.
        batch_size: training batch size per device.
        val_batch_size: validation/test batch size (default: `batch_size`).
        num_workers: loader processes (default: the usable CPUs per visible GPU, at most 8).
        pin_memory: pin host memory (default: when CUDA is available).
        predict_dir: folder of images for `msccl predict`.
    """

    dataset_class: ClassVar[type[FileSegmentation]]

    def __init__(
        self,
        root: str,
        crop_size: int | tuple[int, int] = 512,
        augmentation: Augmentation | None = None,
        test_split: str = "test",
        repeat_factor_threshold: float | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        predict_dir: str | None = None,
    ) -> None:
        num_workers = default_num_workers() if num_workers is None else num_workers
        super().__init__(batch_size, val_batch_size, num_workers, pin_memory, predict_dir)
        if test_split not in self.dataset_class.splits:
            splits = ", ".join(self.dataset_class.splits)
            raise ValueError(f"data.test_split must be one of {splits} for {self.dataset_class.name}")
        self.root = root
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.augmentation = augmentation or Augmentation()
        self.test_split = test_split
        self.repeat_factor_threshold = repeat_factor_threshold
        self._train_sampler: RepeatFactorSampler | None = None

    def make_dataset(self, split: str, transform: Transform) -> FileSegmentation:
        """The plain dataset of one of the publisher's splits (subclasses add their options)."""
        return self.dataset_class(self.root, split, transform)

    def build_dataset(self, split: str) -> Dataset:
        if split != "train":
            return self.make_dataset(self.test_split if split == "test" else split, eval_transform())
        transform = train_transform(self.crop_size, self.augmentation, self.ignore_index)
        # the run's seed (identical on every DDP rank) and the rank: reading the dataset directly
        # reproduces per seed and differs across ranks; the training loader reseeds every sample
        # from (seed, epoch, position) (msccl.data.sampling)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        seed_pipeline(transform, torch.initial_seed(), rank)
        return self.make_dataset("train", transform)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.repeat_factor_threshold is not None and self._train_sampler is None:
            presence = class_presence(self.datasets["train"], self.num_classes, self.num_workers)
            factors = repeat_factors(presence, self.repeat_factor_threshold)
            # the run's seed, identical on every DDP rank under seed_everything
            self._train_sampler = RepeatFactorSampler(factors, seed=torch.initial_seed())

    def train_sampler(self) -> Sampler[int] | None:
        return self._train_sampler


class _LabelPresence(Dataset):
    """Which classes each label contains, reading labels only."""

    def __init__(self, dataset: FileSegmentation, num_classes: int) -> None:
        self.dataset, self.num_classes = dataset, num_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.bincount(self.dataset.load_label(index).ravel(), minlength=256)[: self.num_classes] > 0


def class_presence(dataset: FileSegmentation, num_classes: int, num_workers: int = 0) -> np.ndarray:
    """Boolean [images, classes]: which classes appear in each image's label."""
    loader = DataLoader(_LabelPresence(dataset, num_classes), batch_size=64, num_workers=num_workers)
    return torch.cat(list(progress(loader, desc="class presence", unit="batch"))).numpy()
