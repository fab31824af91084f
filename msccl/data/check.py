"""`msccl data check`: walk a dataset tree and list every problem in it, before training does.
`msccl data browse`: draw samples of a split as training sees them, and its classes' pixel shares.
`msccl data example`: write a small folder dataset (the synthetic images) to copy the layout of.

    msccl data check --dataset cityscapes --root /data/cityscapes
    msccl data check --dataset cadis --root /data/CaDIS --task 2 --splits train val
    msccl data check --dataset folder --root my_data        (your own data: msccl.data.folder)
    msccl data example --root my_data                        (writes a small folder dataset to copy)
    msccl data browse --dataset cityscapes --root /data/cityscapes --split train --output browse/
    msccl data browse --dataset synthetic --output browse/

`check` reports images and pairs per split, then every problem (missing folders, images without labels
and labels without images, unreadable, corrupt or truncated files, label values outside the label map,
image/label size mismatches) and the pixel share of each class per split. Exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from msccl.data.ade20k import ADE20KSegmentation
from msccl.data.base import (
    DatasetError,
    FileSegmentation,
    LabelMap,
    Pair,
    distinct_palette,
    read_image,
    read_label,
    size_mismatch,
)
from msccl.data.cadis import CADIS_TASK_CLASSES, CaDISSegmentation
from msccl.data.cityscapes import CityscapesSegmentation
from msccl.data.datamodule import SPLITS, SyntheticDataModule, default_num_workers
from msccl.data.folder import LabelledFolder, write_example_tree
from msccl.data.pascal_context import PascalContextSegmentation
from msccl.data.synthetic import SyntheticSegmentation
from msccl.data.transforms import flip_transform, train_transform
from msccl.flags import CommandParser
from msccl.progress import progress

__all__ = ["DATASETS", "check_dataset", "inspect_pair", "main"]

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


SYNTHETIC = "synthetic"
"""`msccl data browse --dataset synthetic`: the built-in dataset (no root) as the demo trains on it."""


def main(argv: list[str]) -> int:
    """`msccl data check|browse ...`: check returns 0 on a clean dataset, 1 on any problem."""
    parser = CommandParser(prog="msccl data", description="Dataset tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="list every problem in a dataset tree")
    check.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    check.add_argument("--root", required=True, help="the dataset folder as shipped")
    check.add_argument("--splits", nargs="+", help="splits to check (default: all of the dataset's)")
    browse = commands.add_parser("browse", help="pictures of a split: labelled samples and pixel shares")
    browse.add_argument("--dataset", required=True, choices=sorted([*DATASETS, SYNTHETIC]))
    browse.add_argument("--root", help="the dataset folder as shipped (not for synthetic)")
    browse.add_argument("--split", default="train", help="the split to look at (default: train)")
    browse.add_argument("--output", required=True, help="a new or empty folder for the pictures")
    browse.add_argument("--num_images", type=int, default=8, help="samples drawn (default: 8)")
    browse.add_argument("--crop_size", type=int, default=512, help="the training crop of the augmentation")
    browse.add_argument("--seed", type=int, default=0, help="which samples, and their augmentation")
    browse.add_argument("--dpi", type=int, default=100, help="pixels per inch of the PNGs (default: 100)")
    for command in (check, browse):
        command.add_argument(
            "--task", type=int, choices=sorted(CADIS_TASK_CLASSES), help="CaDIS task (default 1)"
        )
        command.add_argument("--workers", type=int, default=default_num_workers(), help="decoding processes")
    example = commands.add_parser("example", help="write a small folder dataset to copy (the synthetic data)")
    example.add_argument("--root", required=True, help="a new or empty folder")
    example.add_argument("--train", type=int, default=16, help="training images")
    example.add_argument("--val", type=int, default=4, help="validation images")
    example.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = parser.parse_args(argv)
    if args.command == "example":
        return _write_example(args.root, args.train, args.val, args.size)
    dataset_class = DATASETS.get(args.dataset)
    splits = (args.splits or ()) if args.command == "check" else [args.split]
    valid_splits = SPLITS if dataset_class is None else dataset_class.splits
    for split in splits:
        if split not in valid_splits:
            parser.error(f"{args.dataset} has splits {', '.join(valid_splits)}, not {split!r}")
    options = {}
    if args.task is not None:
        if dataset_class is not CaDISSegmentation:
            parser.error("--task applies to --dataset cadis only")
        options["task"] = args.task
    if args.command == "browse":
        return _browse(parser, args, options)
    problems = check_dataset(args.dataset, args.root, args.splits, args.workers, **options)
    return 1 if problems else 0


def _write_example(root: str, num_train: int, num_val: int, image_size: int) -> int:
    try:
        written = write_example_tree(root, num_train, num_val, image_size)
    except DatasetError as error:
        print(error, file=sys.stderr)
        return 1
    print(
        f"wrote {num_train} training and {num_val} validation images, their labels and classes.yaml "
        f"to {written}"
    )
    return 0


def _browse(parser: argparse.ArgumentParser, args: argparse.Namespace, options: dict) -> int:
    """`msccl data browse`: build the split as training would, then draw it (msccl.plots.browse)."""
    if (args.root is None) != (args.dataset == SYNTHETIC):
        parser.error("--root is needed for a dataset read from files, and not for synthetic")
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        parser.error(
            f"--output {output} exists and is not an empty folder: give a new one (nothing is overwritten)"
        )
    if min(args.num_images, args.crop_size, args.dpi) < 1:
        parser.error("--num_images, --crop_size and --dpi must be at least 1")
    try:
        from msccl.plots.browse import Browsable, browse
    except ImportError as error:
        parser.error(str(error))
    if args.dataset == SYNTHETIC:
        data = SyntheticDataModule()  # the demo's images; --seed picks among them
        dataset = data.build_dataset(args.split)
        source = Browsable(
            f"synthetic {args.split}",
            len(dataset),
            dataset.generate,
            partial(_synthetic_label, dataset),
            data.class_names,
            data.palette,
            flip_transform(),  # what SyntheticDataModule trains with
        )
    else:
        try:
            dataset = DATASETS[args.dataset](args.root, args.split, **options)
        except DatasetError as error:
            print(error, file=sys.stderr)
            return 1
        source = Browsable(
            f"{args.dataset} {args.split}",
            len(dataset),
            dataset.load,
            dataset.load_label,
            dataset.class_names,
            dataset.palette or distinct_palette(len(dataset.class_names)),
            train_transform((args.crop_size, args.crop_size)),  # FileDataModule's defaults at this crop
        )
    try:
        written = browse(source, output, args.num_images, args.seed, args.workers, dpi=args.dpi)
    except DatasetError as error:
        print(error, file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def _synthetic_label(dataset: SyntheticSegmentation, index: int) -> np.ndarray:
    return dataset.generate(index)[1]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
