"""The dataset tree checker behind `msccl data check`: every problem of a dataset, before training meets it.

`check_dataset` reports images and pairs per split, then every problem (missing folders, images without
labels and labels without images, unreadable, corrupt or truncated files, label values outside the label
map, image/label size mismatches) and the pixel share of each class per split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from msccl.data.ade20k import ADE20KSegmentation
from msccl.data.base import (
    DatasetError,
    FileSegmentation,
    LabelMap,
    Pair,
    read_image,
    read_label,
    size_mismatch,
)
from msccl.data.cadis import CaDISSegmentation
from msccl.data.cityscapes import CityscapesSegmentation
from msccl.data.folder import LabelledFolder
from msccl.data.pascal_context import PascalContextSegmentation
from msccl.progress import progress

__all__ = ["DATASETS", "check_dataset", "inspect_pair"]

DATASETS: dict[str, type[FileSegmentation]] = {
    dataset.name: dataset
    for dataset in (
        CityscapesSegmentation,
        ADE20KSegmentation,
        PascalContextSegmentation,
        CaDISSegmentation,
        LabelledFolder,
    )
}


def inspect_pair(
    pair: Pair, label_map: LabelMap, read_raw_label: Callable[[Path], np.ndarray] = read_label
) -> tuple[list[str], np.ndarray | None]:
    """Every problem of one pair, and its pixel count per raw label id [label_map.size or more] (None if
    unreadable); `read_raw_label` reads the label file as the dataset does."""
    problems: list[str] = []
    image = label = None
    try:
        image = read_image(pair.image)
    except DatasetError as error:
        problems.append(str(error))
    try:
        label = read_raw_label(pair.label)
        label_map.apply(label, pair.label)
    except DatasetError as error:
        problems.append(str(error))
    if image is not None and label is not None and (mismatch := size_mismatch(image, label, pair)):
        problems.append(mismatch)
    counts = None if label is None else np.bincount(label.ravel(), minlength=label_map.size)
    return problems, counts


class _Inspections(Dataset):
    """`inspect_pair` of every pair, so a DataLoader can spread the decoding over processes."""

    def __init__(self, dataset: FileSegmentation) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.pairs)

    def __getitem__(self, index: int) -> tuple[list[str], np.ndarray | None]:
        return inspect_pair(self.dataset.pairs[index], self.dataset.label_map, self.dataset.read_raw_label)


def _unbatched(batch: list) -> list:
    return batch


def check_dataset(
    name: str,
    root: str,
    splits: list[str] | None = None,
    workers: int = 0,
    print_fn: Callable[[str], None] = print,
    **options,
) -> list[str]:
    """Check the splits of dataset `name` under `root`; prints the report and returns all problems.

    `options` go to the dataset class (CaDIS: `task`).
    """
    dataset_class = DATASETS[name]
    problems: list[str] = []
    shares: dict[str, np.ndarray] = {}
    class_names: tuple[str, ...] = ()
    for split in splits or dataset_class.available_splits(root):
        try:
            dataset = dataset_class(root, split, strict=False, **options)
        except DatasetError as error:  # the root itself is missing
            problems.append(str(error))
            break
        class_names = dataset.class_names
        split_problems = list(dataset.problems)
        raw_counts = np.zeros(dataset.label_map.size, np.int64)
        loader = DataLoader(_Inspections(dataset), batch_size=8, num_workers=workers, collate_fn=_unbatched)
        for batch in progress(loader, desc=f"checking {split}", unit="batch"):
            for pair_problems, counts in batch:
                split_problems += pair_problems
                if counts is not None:
                    raw_counts = _add_counts(raw_counts, counts)
        counts = dataset.label_map.train_counts(raw_counts)
        shares[split] = counts / max(1, counts.sum())
        print_fn(f"{split}: {len(dataset.pairs)} image/label pairs, {len(split_problems)} problems")
        problems += split_problems
    if shares:
        print_fn("")
        print_fn(_share_table(class_names, shares))
    print_fn("")
    if problems:
        print_fn(f"{len(problems)} problems:")
        for problem in problems:
            print_fn(f"  {problem}")
    else:
        print_fn("no problems found")
    return problems


def _add_counts(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`total + counts`, the shorter padded with zeros (a label with unknown ids beyond the table)."""
    size = max(len(total), len(counts))
    return np.pad(total, (0, size - len(total))) + np.pad(counts, (0, size - len(counts)))


def _share_table(class_names: tuple[str, ...], shares: dict[str, np.ndarray]) -> str:
    """Pixel share (%) of each class, and of ignore, per split."""
    names = [*class_names, "(ignore)"]
    width = max(len(name) for name in names)
    lines = ["pixel share (%)", f"{'class':<{width}}" + "".join(f"{split:>9}" for split in shares)]
    for index, name in enumerate(names):
        lines.append(f"{name:<{width}}" + "".join(f"{100 * share[index]:9.3f}" for share in shares.values()))
    return "\n".join(lines)
