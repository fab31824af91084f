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
from functools import partial
from pathlib import Path

import numpy as np

from msccl.commands.flags import CommandParser
from msccl.data.base import DatasetError, distinct_palette
from msccl.data.cadis import CADIS_TASK_CLASSES, CaDISSegmentation
from msccl.data.check import DATASETS, check_dataset
from msccl.data.datamodule import SPLITS, SyntheticDataModule, default_num_workers
from msccl.data.example import write_example_tree
from msccl.data.synthetic import SyntheticSegmentation
from msccl.data.transforms import flip_transform, train_transform

__all__ = ["SYNTHETIC", "main"]

SYNTHETIC = "synthetic"
"""`msccl data browse --dataset synthetic`: the built-in dataset (no root) as the demo trains on it."""


def main(argv: list[str]) -> int:
    """`msccl data check|browse|example ...`: check returns 0 on a clean dataset, 1 on any problem."""
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
    try:  # matplotlib comes with the `plots` extra: without it, a one-line error
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
