"""LightningDataModules: the shared loader logic and the built-in synthetic dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from msccl.data.base import IGNORE_INDEX, ImageFolder
from msccl.data.sampling import ResumableDataLoader
from msccl.data.synthetic import SYNTHETIC_CLASSES, SyntheticSegmentation
from msccl.data.transforms import eval_transform, flip_transform

__all__ = ["SegmentationDataModule", "SyntheticDataModule"]

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

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        """An evaluation loader: every sample once, in order."""
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        # order and augmentation fixed by (seed, epoch), resumable mid-epoch (msccl.data.sampling);
        # the last incomplete batch is dropped: a batch of one breaks BatchNorm in training
        loader = ResumableDataLoader(
            self.datasets["train"],
            self.batch_size,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # set by seed_everything
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

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", 1)  # one image at a time: sizes may differ


class SyntheticDataModule(SegmentationDataModule):
    """The built-in procedural dataset (see `msccl.data.synthetic`): no files, deterministic per seed."""

    def __init__(
        self,
        num_classes: int = len(SYNTHETIC_CLASSES),
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
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, pin_memory, predict_dir)
        if not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
            raise ValueError(f"data.num_classes must be in 2..{len(SYNTHETIC_CLASSES)}, got {num_classes}")
        self.class_names = tuple(c.name for c in SYNTHETIC_CLASSES[:num_classes])
        self.palette = tuple(tuple(int(255 * v) for v in c.colour) for c in SYNTHETIC_CLASSES[:num_classes])
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
        )


def default_palette(num_classes: int) -> Sequence[tuple[int, int, int]]:
    """Distinct colours for datasets without an official palette."""
    generator = torch.Generator().manual_seed(0)
    colours = torch.randint(0, 256, (num_classes, 3), generator=generator)
    return [tuple(int(v) for v in row) for row in colours]
