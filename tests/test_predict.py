from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from msccl.cli import build_cli
from msccl.data import SyntheticDataModule
from msccl.data.base import IGNORE_INDEX, read_label
from msccl.plots.legend import add_legend
from msccl.training.prediction import IGNORE_COLOUR
from tests.conftest import TINY_SYNTHETIC

SIZES = {"wide.png": (50, 130), "small.jpg": (23, 31), "square.bmp": (64, 64)}  # (height, width)


def _files(root):
    return {p for p in root.rglob("*") if p.is_file()}


def test_predict_writes_labels_and_palette_overlays_for_any_image_size(in_tmp_dir):
    images = in_tmp_dir / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width) in SIZES.items():
        cv2.imwrite(str(images / name), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    build_cli(["fit", *TINY_SYNTHETIC])
    checkpoint = in_tmp_dir / "runs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt"
    before = _files(in_tmp_dir)

    output = in_tmp_dir / "predictions"
    cli = build_cli(
        [
            "predict",
            *TINY_SYNTHETIC,
            f"--ckpt_path={checkpoint}",
            f"--data.init_args.predict_dir={images}",
            f"--output={output}",
            # the evaluation given now wins over the checkpoint's (whole image)
            "--model.init_args.evaluation.mode=sliding",
            "--model.init_args.evaluation.crop=[64,64]",
        ]
    )
    assert cli.model.evaluation.mode == "sliding"
    written = _files(in_tmp_dir) - before
    assert all(output in path.parents for path in written)  # nothing outside --output
    palette = np.array(SyntheticDataModule().palette, np.uint8)
    names = SyntheticDataModule().class_names
    for name, (height, width) in SIZES.items():
        stem = name.rsplit(".", 1)[0]
        with Image.open(output / "labels" / f"{stem}.png") as png:  # a palette PNG of the train ids
            assert png.mode == "P"
            colours = np.array(png.getpalette(), np.uint8).reshape(-1, 3)
            label = np.array(png)
        assert np.array_equal(colours[: len(palette)], palette)  # shows the dataset's colours
        assert tuple(colours[IGNORE_INDEX]) == IGNORE_COLOUR
        assert np.array_equal(read_label(output / "labels" / f"{stem}.png"), label)  # msccl reads the ids
        assert label.shape == (height, width) and label.dtype == np.uint8 and label.max() < len(palette)
        shown = cv2.cvtColor(cv2.imread(str(output / "overlays" / f"{stem}.png")), cv2.COLOR_BGR2RGB)
        original = cv2.cvtColor(cv2.imread(str(images / name)), cv2.COLOR_BGR2RGB)
        expected = (0.5 * palette[label].astype(np.float32) + 0.5 * original.astype(np.float32)).round()
        assert np.array_equal(shown[:height, :width], expected.astype(np.uint8))  # the image, then its legend
        assert np.array_equal(shown, add_legend(expected.astype(np.uint8), label, names, palette))
    assert (output / "config.yaml").is_file()  # how the predictions were made


def test_predict_without_output_is_refused(in_tmp_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_cli(["predict", *TINY_SYNTHETIC, f"--data.init_args.predict_dir={tmp_path}"])
    assert "--output" in capsys.readouterr().err


def test_predict_writes_every_readable_image_and_lists_the_unreadable_ones(in_tmp_dir, capsys):
    """Issue 11 items 5 and 6: a 16-bit copy of an image is predicted as the 8-bit one; an unreadable
    file (sorted first here) does not stop the others, all are listed at the end, exit code 1."""
    images = in_tmp_dir / "images"
    images.mkdir()
    (images / "a_truncated.png").write_bytes(cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1][:40])
    (images / "b_notes.jpg").write_text("not an image")
    image = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "c_8bit.png"), image)
    cv2.imwrite(str(images / "d_16bit.png"), image.astype(np.uint16) * 257)  # item 5: the same image
    output = in_tmp_dir / "predictions"
    args = ["predict", *TINY_SYNTHETIC, f"--data.init_args.predict_dir={images}", f"--output={output}"]
    with pytest.raises(SystemExit) as exit_info:
        build_cli(args)  # random weights: only which files get written matters here
    assert exit_info.value.code == 1
    for folder in ("labels", "overlays"):
        assert sorted(p.name for p in (output / folder).iterdir()) == ["c_8bit.png", "d_16bit.png"]
        written = [cv2.imread(str(output / folder / name)) for name in ("c_8bit.png", "d_16bit.png")]
        assert np.array_equal(*written)  # the 16-bit copy is predicted exactly as the 8-bit image
    captured = capsys.readouterr()
    assert "wrote the predictions of 2 of 4 images" in captured.out
    unreadable = captured.err[captured.err.index("2 unreadable images (no output):") :].splitlines()
    assert "corrupt or truncated image" in unreadable[1] and "a_truncated.png" in unreadable[1]
    assert "b_notes.jpg is not an image" in unreadable[2]


def test_predict_lists_what_it_skips_and_predicts_large_images_in_windows(in_tmp_dir, capsys):
    """Other files of the folder are listed as skipped; an image above evaluation.max_whole_pixels is
    predicted in large_image_window windows, exactly as the sliding evaluation with that crop."""
    images = in_tmp_dir / "images"
    (images / "more").mkdir(parents=True)
    (images / "notes.txt").write_text("taken on Monday")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "large.png"), rng.integers(0, 256, (100, 90, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "small.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    args = ["predict", *TINY_SYNTHETIC, f"--data.init_args.predict_dir={images}"]
    evaluation = "--model.init_args.evaluation"
    build_cli(
        [
            *args,
            "--output=bounded",
            f"{evaluation}.max_whole_pixels=5000",
            f"{evaluation}.large_image_window=[64,64]",
        ]
    )
    captured = capsys.readouterr()
    assert "wrote the predictions of 2 of 2 images" in captured.out
    skipped = captured.out[captured.out.index("skipped 2 not images") :].splitlines()
    assert skipped[1:] == [f"  {images / 'more'}/", f"  {images / 'notes.txt'}"]
    windowed = [line for line in captured.err.splitlines() if "max_whole_pixels" in line]
    assert windowed == [
        "msccl: large: 100x90 pixels is more than evaluation.max_whole_pixels=5000: "
        "predicted in 64x64 windows"
    ]
    build_cli([*args, "--output=sliding", f"{evaluation}.mode=sliding", f"{evaluation}.crop=[64,64]"])
    bounded = read_label(in_tmp_dir / "bounded" / "labels" / "large.png")
    assert bounded.shape == (100, 90)
    assert np.array_equal(bounded, read_label(in_tmp_dir / "sliding" / "labels" / "large.png"))
