"""msccl.Segmenter: the Python inference API gives exactly what `msccl predict` writes."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import msccl
from msccl.cli import build_cli
from msccl.data.base import DatasetError, read_image, read_label
from msccl.data.synthetic import SYNTHETIC_PALETTE
from msccl.data.transforms import eval_transform
from msccl.training.checkpoint import CheckpointError
from msccl.training.evaluation import Evaluation
from tests.conftest import REPO, TINY_SYNTHETIC

# the checkpoint's evaluation settings are a sliding window, which predict and the Segmenter both use
SLIDING = ["--model.init_args.evaluation.mode=sliding", "--model.init_args.evaluation.crop=[48,64]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run's checkpoint, a folder of images of every kind `msccl predict` reads, its predictions."""
    root = tmp_path_factory.mktemp("api")
    build_cli(["fit", *TINY_SYNTHETIC, *SLIDING, f"--run_dir={root / 'run'}"])
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 130, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "a_rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(images / "b_16bit.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    cv2.imwrite(str(images / "c_grey.png"), rng.integers(0, 256, (70, 45), dtype=np.uint8))
    rgba = np.concatenate([rgb[:40, :90], rng.integers(0, 256, (40, 90, 1), dtype=np.uint8)], axis=2)
    cv2.imwrite(str(images / "d_rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(str(images / "e_photo.jpg"), rng.integers(0, 256, (66, 81, 3), dtype=np.uint8))
    output = root / "predictions"
    checkpoint = root / "run" / "checkpoints" / "last.ckpt"
    arguments = [f"--ckpt_path={checkpoint}", f"--data.init_args.predict_dir={images}", f"--output={output}"]
    build_cli(["predict", *TINY_SYNTHETIC, *arguments])
    return checkpoint, images, output, {"rgb": rgb, "rgba": rgba}


def test_segmenter_gives_msccl_predicts_labels_and_overlays(trained):
    checkpoint, images, output, arrays = trained
    seg = msccl.Segmenter.from_checkpoint(checkpoint)
    assert seg.evaluation.mode == "sliding" and seg.evaluation.crop == (48, 64)  # the checkpoint's
    assert seg.class_names[3:5] == ("checker", "speckle")
    assert np.array_equal(seg.palette, np.array(SYNTHETIC_PALETTE, np.uint8))  # the data's, in the checkpoint
    paths = sorted(images.iterdir())
    labels = seg(paths)
    assert len(labels) == 5
    for path, label in zip(paths, labels, strict=True):
        written = read_label(output / "labels" / f"{path.stem}.png")
        assert label.dtype == np.uint8 and label.shape == read_image(path).shape[:2]
        assert np.array_equal(label, written), path.name  # identical to msccl predict
        assert np.array_equal(seg(path), label) and np.array_equal(seg(str(path)), label)
        shown = cv2.cvtColor(cv2.imread(str(output / "overlays" / f"{path.stem}.png")), cv2.COLOR_BGR2RGB)
        assert np.array_equal(seg.overlay(path), shown), path.name  # the same picture, legend included
    # arrays are read by the same rules as files: the 8-bit, 16-bit and RGBA images as their files
    rgb, rgba = arrays["rgb"], arrays["rgba"]
    assert np.array_equal(seg(rgb), labels[0]) and np.array_equal(seg(rgb.astype(np.uint16) * 257), labels[1])
    assert np.array_equal(seg(rgba), labels[3])
    grey = cv2.imread(str(images / "c_grey.png"), cv2.IMREAD_UNCHANGED)
    assert grey.ndim == 2 and np.array_equal(seg(grey), labels[2])
    assert np.array_equal(seg(grey[..., None]), labels[2])
    batch = seg(np.stack([rgb, rgb]))
    assert batch.shape == (2, *rgb.shape[:2]) and (batch == labels[0]).all()
    # a normalised tensor batch (what the data modules yield) in one forward, on the device
    tensor = eval_transform()(image=rgb)["image"]
    assert torch.equal(seg(tensor), torch.from_numpy(labels[0]).long())
    # another evaluation than the checkpoint's: the whole image at once
    whole = msccl.Segmenter.from_checkpoint(checkpoint, evaluation=Evaluation())
    assert whole(rgb).shape == rgb.shape[:2] and whole.evaluation.mode == "whole"
    plain = seg.overlay(rgb, labels[0], legend=False)
    assert plain.shape == rgb.shape and (seg.overlay(rgb).shape[0] > rgb.shape[0])  # the legend band
    with pytest.raises(ValueError, match="differ in size"):
        seg.overlay(rgb, labels[2])
    with pytest.raises(DatasetError, match=r"float32 pixels"):
        seg(rgb.astype(np.float32))


def test_segmenter_refuses_an_altered_checkpoint(trained, tmp_path):
    checkpoint = trained[0]
    altered = tmp_path / "altered.ckpt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 3] ^= 0xFF  # one byte inside the weights
    altered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="altered, damaged or cut short"):
        msccl.Segmenter.from_checkpoint(altered)
    with pytest.raises(CheckpointError, match="does not exist"):
        msccl.Segmenter.from_checkpoint(tmp_path / "missing.ckpt")


def test_import_msccl_is_light():
    """`import msccl` loads neither torch nor Lightning; `msccl.Segmenter` imports them on first use."""
    code = (
        "import sys, msccl; heavy = [m for m in ('torch', 'lightning') if m in sys.modules]; "
        "assert not heavy, heavy; msccl.Segmenter; assert 'lightning' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)
