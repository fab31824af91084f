"""`msccl data check`: a clean tree passes; every planted problem is listed and the exit code is 1."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from msccl.cli import main as msccl_main
from msccl.commands.data import main
from tests.dataset_trees import (
    HEIGHT,
    WIDTH,
    ade20k_tree,
    cadis_tree,
    cityscapes_tree,
    pascal_context_tree,
    truncate,
    write_image,
)

TREES = {
    "cityscapes": cityscapes_tree,
    "ade20k": ade20k_tree,
    "pascal_context": pascal_context_tree,
    "cadis": cadis_tree,
}


@pytest.mark.parametrize("dataset", sorted(TREES))
def test_clean_tree_passes_with_counts_and_class_shares(tmp_path, capsys, dataset):
    tree = TREES[dataset](tmp_path / dataset)
    assert main(["check", "--dataset", dataset, "--root", str(tree.root), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    for split, samples in tree.samples.items():
        assert f"{split}: {len(samples)} image/label pairs, 0 problems" in out
    assert "pixel share (%)" in out and "(ignore)" in out and "no problems found" in out


def test_class_shares_are_counted_from_the_labels(tmp_path, capsys):
    tree = cityscapes_tree(tmp_path / "cityscapes", {"train": 1, "val": 1})
    write_image(
        tree.first().label, np.where(np.arange(WIDTH) < 16, 7, 26).astype(np.uint8)[None].repeat(HEIGHT, 0)
    )
    assert (
        main(
            [
                "check",
                "--dataset",
                "cityscapes",
                "--root",
                str(tree.root),
                "--splits",
                "train",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    rows = {line[:14].strip(): line[14:].split() for line in capsys.readouterr().out.splitlines()}
    assert rows["road"] == ["25.000"] and rows["car"] == ["75.000"] and rows["(ignore)"] == ["0.000"]


def test_every_planted_problem_is_listed_and_the_exit_code_is_one(tmp_path, capsys):
    tree = cityscapes_tree(tmp_path / "cityscapes", {"train": 7, "val": 1, "test": 1})
    train = sorted(tree.samples["train"], key=lambda sample: sample.image)
    train[0].label.unlink()  # image without label
    train[1].image.unlink()  # label without image
    train[2].image.write_bytes(b"\x89PNG but not really")  # corrupt
    truncate(train[3].image)  # truncated
    write_image(train[4].label, np.full((HEIGHT, WIDTH), 34, np.uint8))  # outside the map
    write_image(train[5].label, np.full((HEIGHT, 2 * WIDTH), 7, np.uint8))  # size mismatch
    shutil.rmtree(tree.root / "gtFine" / "val")  # missing split folder
    code = main(["check", "--dataset", "cityscapes", "--root", str(tree.root), "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 1
    expected = [
        f"image {train[0].image} has no label",
        f"label {train[1].label} has no image",
        f"corrupt or truncated image {train[2].image}",
        f"corrupt or truncated image {train[3].image}",
        f"label {train[4].label} has values [34] outside the label map",
        f"label {train[5].label} is 128x32 but image {train[5].image} is 64x32",
        f"folder {tree.root / 'gtFine' / 'val'} does not exist",
    ]
    for problem in expected:
        assert problem in out, problem
    assert "7 problems:" in out
    assert "train: 5 image/label pairs, 6 problems" in out and "val: 0 image/label pairs, 1 problems" in out


def test_cadis_task_and_missing_root(tmp_path, capsys):
    tree = cadis_tree(tmp_path / "CaDIS", {5: 1, 7: 1, 16: 1})
    assert (
        main(
            [
                "check",
                "--dataset",
                "cadis",
                "--root",
                str(tree.root),
                "--task",
                "3",
                "--splits",
                "val",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Lens Injector Handle" in out and "Instrument" not in out  # task 3's classes
    assert main(["check", "--dataset", "cadis", "--root", str(tmp_path / "nowhere"), "--workers", "0"]) == 1
    assert f"cadis root {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["check", "--dataset", "cityscapes", "--root", str(tree.root), "--task", "2"])


def test_msccl_data_check_command_with_worker_processes(tmp_path, capsys):
    tree = cityscapes_tree(tmp_path / "cityscapes", {"train": 3, "val": 1, "test": 1})
    truncate(tree.first().image)
    with pytest.raises(SystemExit) as exit_info:  # the `msccl` entry point, as the console script runs it
        msccl_main(["data", "check", "--dataset", "cityscapes", "--root", str(tree.root), "--workers", "2"])
    assert exit_info.value.code == 1
    assert f"corrupt or truncated image {tree.first().image}" in capsys.readouterr().out
