"""Issue 11 items 5 and 6: every image file is read the same way everywhere, and bad files are named."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from msccl.data.base import DatasetError, ImageFolder, read_image, read_label

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (6, 9), dtype=np.uint8)
PALETTE = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 128], [7, 7, 7]], np.uint8)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def _write_cv2(array: np.ndarray):
    return lambda path: cv2.imwrite(str(path), array)


def _write_palette(path: Path) -> None:
    image = Image.fromarray(GREY % len(PALETTE), "P")
    image.putpalette(PALETTE.ravel().tolist())
    image.save(path)


ALPHA = np.full(GREY.shape, 77, np.uint8)  # a constant alpha: dropped, not composited

# file name -> (writer, the RGB uint8 array every reader must give)
IMAGE_KINDS = {
    "rgb8.png": (_write_cv2(_bgr(RGB)), RGB),
    "rgb16.png": (_write_cv2(_bgr(RGB).astype(np.uint16) * 257), RGB),
    "rgba8.png": (_write_cv2(np.dstack([_bgr(RGB), ALPHA])), RGB),
    "rgba16.png": (_write_cv2(np.dstack([_bgr(RGB), ALPHA]).astype(np.uint16) * 257), RGB),
    "grey8.png": (_write_cv2(GREY), np.repeat(GREY[..., None], 3, 2)),
    "grey16.png": (_write_cv2(GREY.astype(np.uint16) * 257), np.repeat(GREY[..., None], 3, 2)),
    "grey_alpha.png": (lambda p: Image.fromarray(np.dstack([GREY, ALPHA]), "LA").save(p), GREY[..., None]),
    "palette.png": (_write_palette, PALETTE[GREY % len(PALETTE)]),
    "rgb8.tif": (_write_cv2(_bgr(RGB)), RGB),
    "rgb16.tif": (_write_cv2(_bgr(RGB).astype(np.uint16) * 257), RGB),
    "grey16.tif": (_write_cv2(GREY.astype(np.uint16) * 257), GREY[..., None]),
    "rgb8.bmp": (_write_cv2(_bgr(RGB)), RGB),
    "grey8.webp": (lambda p: Image.fromarray(GREY, "L").save(p, lossless=True), GREY[..., None]),
}


def test_every_kind_of_image_file_reads_as_the_same_rgb_pixels_and_tensors(tmp_path):
    for name, (write, _) in IMAGE_KINDS.items():
        write(tmp_path / name)
    for name, (_, expected) in IMAGE_KINDS.items():
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (6, 9, 3), name
        assert np.array_equal(image, np.broadcast_to(expected, (6, 9, 3))), name
    # `msccl predict` reads through ImageFolder, the datasets through FileSegmentation.load: both
    # use read_image, so the network gets the very same tensor for the 8- and 16-bit copies
    samples = {Path(s["path"]).name: s["image"] for s in ImageFolder(tmp_path)}
    assert samples["rgb8.png"].dtype == torch.float32
    for copy in ("rgb16.png", "rgba16.png", "rgb16.tif", "rgb8.bmp"):
        assert torch.equal(samples[copy], samples["rgb8.png"]), copy
    assert torch.equal(samples["grey16.png"], samples["grey8.png"])


def test_16_bit_values_round_to_the_nearest_8_bit_value(tmp_path):
    values = np.array([[0, 128, 129, 257 * 100 + 128, 257 * 100 + 129, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), values)
    assert read_image(tmp_path / "grey16.png")[0, :, 0].tolist() == [0, 0, 1, 100, 101, 255]


def test_labels_keep_their_raw_ids_in_8_and_16_bits_and_palette_indices(tmp_path):
    ids = RNG.integers(0, 40, (6, 9), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "ids8.png"), ids)
    cv2.imwrite(str(tmp_path / "ids16.png"), ids.astype(np.uint16))  # raw ids, not scaled like images
    indexed = Image.fromarray(ids, "P")
    indexed.putpalette(RNG.integers(0, 256, 768).tolist())
    indexed.save(tmp_path / "ids_palette.png")
    for name in ("ids8.png", "ids16.png", "ids_palette.png"):
        label = read_label(tmp_path / name)
        assert label.dtype == np.uint8 and np.array_equal(label, ids), name
    cv2.imwrite(str(tmp_path / "big.png"), np.full((2, 2), 300, np.uint16))
    with pytest.raises(DatasetError, match=r"big\.png has values up to 300"):
        read_label(tmp_path / "big.png")


def _truncate(source: str):
    def write(path: Path) -> None:
        IMAGE_KINDS[source][0](path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return write


BAD_FILES = {
    "empty.png": (lambda p: p.write_bytes(b""), "empty.png: Expected a non empty file"),
    "notes.png": (lambda p: p.write_text("not an image"), "notes.png is not an image"),
    "truncated.png": (_truncate("rgb8.png"), "corrupt or truncated image .*truncated.png"),
    "truncated.jpg": (
        lambda p: p.write_bytes(cv2.imencode(".jpg", RGB)[1].tobytes()[:300]),
        "corrupt or truncated image .*truncated.jpg",
    ),
    "truncated.bmp": (_truncate("rgb8.bmp"), "cannot read image .*truncated.bmp"),
    "empty.tif": (lambda p: p.write_bytes(b""), "cannot read image .*empty.tif"),
    "float.tif": (_write_cv2(RGB.astype(np.float32)), "float.tif has float32 pixels"),
    "missing.png": (lambda p: None, "cannot read .*missing.png"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_image_file_raises_a_dataset_error_naming_it(tmp_path, name):
    write, message = BAD_FILES[name]
    write(tmp_path / name)
    with pytest.raises(DatasetError, match=message) as error:
        read_image(tmp_path / name)
    assert len(str(error.value).splitlines()) == 1 and ".cpp" not in str(error.value)
