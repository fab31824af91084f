"""PASCAL-Context 59: the VOC2010 layout with split lists, the folder-per-split variant, the label map."""

from __future__ import annotations

import numpy as np
import pytest

from msccl.cli import build_cli
from msccl.data import DatasetError, PascalContext, PascalContextSegmentation
from tests.dataset_trees import (
    expected_train_ids,
    pascal_context_split_folders_tree,
    pascal_context_tree,
    tiny_fit_args,
)

REDUCE_ZERO = {k: k - 1 for k in range(1, 60)}  # raw 0 (background) -> ignore, k -> k - 1


@pytest.fixture
def tree(tmp_path):
    return pascal_context_tree(tmp_path / "data")


@pytest.mark.parametrize("root_level", ["parent", "VOCdevkit", "VOC2010"])
def test_split_lists_pick_the_pairs_from_any_root_level(tree, root_level):
    root = {"parent": tree.root, "VOCdevkit": tree.root / "VOCdevkit"}.get(
        root_level, tree.root / "VOCdevkit" / "VOC2010"
    )
    data = PascalContext(str(root), num_workers=0)
    data.setup("fit")
    for split in ("train", "val"):
        assert sorted((p.image, p.label) for p in data.datasets[split].pairs) == tree.pairs(split)
    # the unlisted VOC2010 image is not part of any split
    assert all("2010_000001" not in p.name for s in ("train", "val") for p in data.datasets[s].pairs)


def test_folder_per_split_variant(tmp_path):
    tree = pascal_context_split_folders_tree(tmp_path / "pcontext")
    data = PascalContext(str(tree.root), num_workers=0)
    data.setup("fit")
    for split in ("train", "val"):
        assert sorted((p.image, p.label) for p in data.datasets[split].pairs) == tree.pairs(split)


def test_train_ids_pixel_for_pixel(tree):
    dataset = PascalContextSegmentation(tree.root, "train")
    for index, pair in enumerate(dataset.pairs):
        np.testing.assert_array_equal(
            dataset.load(index)[1], expected_train_ids(tree.raw_label(pair.image), REDUCE_ZERO)
        )


def test_59_alphabetical_class_names_with_colours():
    names = PascalContext.class_names
    assert len(names) == 59 == len(PascalContext.palette) and names == tuple(sorted(names))
    assert names[0] == "aeroplane" and names[-1] == "wood" and "background" not in names


def test_layout_problems_are_named(tree, tmp_path):
    voc = tree.root / "VOCdevkit" / "VOC2010"
    (voc / "ImageSets" / "SegmentationContext" / "val.txt").unlink()
    with pytest.raises(DatasetError, match="SegmentationContext/val.txt does not exist"):
        PascalContextSegmentation(tree.root, "val")
    listed = voc / "JPEGImages" / f"{tree.first().image.stem}.jpg"
    listed.unlink()
    with pytest.raises(DatasetError, match=f"missing image {listed}"):
        PascalContextSegmentation(tree.root, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no PASCAL-Context layout"):
        PascalContextSegmentation(tmp_path / "empty", "train")


def test_short_fit_from_the_config(tree, in_tmp_dir):
    cli = build_cli(tiny_fit_args("pascal_context.yaml", tree.root / "VOCdevkit"))
    assert cli.trainer.global_step == 2 and cli.model.num_classes == 59
