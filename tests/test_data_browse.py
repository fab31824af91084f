"""`msccl data browse`: labelled sample grids and the pixel-share chart, for the synthetic dataset and a
dataset read from files; the chart's numbers are the labels' pixel counts."""

from __future__ import annotations

import numpy as np
import pytest

from msccl.cli import main as msccl_main
from msccl.commands.data import main
from msccl.data.cityscapes import CityscapesSegmentation
from msccl.data.transforms import eval_transform
from msccl.plots.browse import Browsable, pixel_counts
from tests.dataset_trees import cityscapes_tree
from tests.test_plots import assert_picture


def test_synthetic_split_gives_a_grid_and_a_share_chart(tmp_path, capsys):
    output = tmp_path / "browse"
    arguments = ["browse", "--dataset", "synthetic", "--split", "val", "--output", str(output)]
    assert main([*arguments, "--num-images", "3", "--workers", "0", "--dpi", "50"]) == 0
    assert_picture(output / "samples_00.png", (420, 275))  # 3 samples: 2 rows of 2 (as read, augmented)
    assert_picture(output / "pixel_share.png", (350, 172))  # 8 classes
    assert sorted(p.name for p in output.iterdir()) == ["pixel_share.png", "samples_00.png"]
    assert f"wrote {output / 'pixel_share.png'}" in capsys.readouterr().out

    # nothing is overwritten, and synthetic has no root
    assert output.is_dir()
    with pytest.raises(SystemExit):
        main([*arguments])
    assert "is not an empty folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*arguments[:-1], str(tmp_path / "new"), "--root", str(tmp_path)])
    assert "--root is needed for a dataset read from files, and not for synthetic" in capsys.readouterr().err


def test_file_dataset_through_the_msccl_command_and_its_pixel_counts(tmp_path, capsys):
    tree = cityscapes_tree(tmp_path / "cityscapes", {"train": 3})
    output = tmp_path / "browse"
    command = ["data", "browse", "--dataset", "cityscapes", "--root", str(tree.root), "--output", str(output)]
    with pytest.raises(SystemExit) as done:
        msccl_main([*command, "--crop-size", "32", "--workers", "0"])
    assert done.value.code == 0
    assert_picture(output / "samples_00.png", (840, 550))
    assert_picture(output / "pixel_share.png")

    dataset = CityscapesSegmentation(tree.root, "train")
    source = Browsable("c", len(dataset), dataset.load, dataset.load_label, (), (), eval_transform())
    expected = sum(np.bincount(dataset.load_label(i).ravel(), minlength=256) for i in range(len(dataset)))
    assert np.array_equal(pixel_counts(source), expected) and expected[:19].sum() > 0
