"""What every msccl dataset yields, and the shared machinery of the file datasets.

A file dataset differs from another only in its layout (where images and labels live, how they pair)
and its label map; reading, checking and mapping labels to train ids happen here, once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file

from msccl.data.transforms import eval_transform
from msccl.labels import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "DatasetError",
    "FileSegmentation",
    "ImageFolder",
    "LabelMap",
    "NotAnIdMap",
    "Pair",
    "Sample",
    "Transform",
    "pair_files",
    "read_image",
    "read_label",
    "to_rgb8",
    "to_sample",
]

Sample = dict[str, Any]
"""{"image": float [3, H, W], "label": int64 [H, W] (absent when predicting), "name": str}; ImageFolder's
add "path", and carry "unreadable" (the reason) instead of "image" for a file that cannot be read."""

Transform = Callable[..., dict[str, Any]]
"""An albumentations-style callable: `transform(image=..., mask=...)` returns a dict of the same keys."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# torchvision's decoders raise on truncated files (OpenCV returns a half-grey JPEG with only a warning)
_TORCHVISION_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


class DatasetError(Exception):
    """A dataset file or folder is missing, unreadable or inconsistent; the message names it."""


class NotAnIdMap(DatasetError):
    """A label file has differing colour channels where an id map was expected."""


def to_sample(image: np.ndarray, label: np.ndarray | None, name: str, transform: Transform | None) -> Sample:
    """Apply `transform` (default: ImageNet normalisation) and convert to tensors."""
    transform = transform or eval_transform()
    if label is None:
        out = transform(image=image)
        return {"image": out["image"], "name": name}
    out = transform(image=image, mask=label)
    return {"image": out["image"], "label": torch.as_tensor(out["mask"]).long(), "name": name}


def _decode(path: Path, mode: ImageReadMode) -> np.ndarray:
    """[H, W, C] uint8 (or uint16) array; DatasetError naming the file when it cannot be fully decoded."""
    try:
        data = read_file(str(path))
    except (OSError, RuntimeError) as error:
        raise DatasetError(f"cannot read {path}: {_reason(error)}") from None
    try:
        decoded = decode_image(data, mode=mode)
    except RuntimeError as error:
        if "Unsupported image file" in str(error):
            raise DatasetError(f"{path} is not an image (not PNG, JPEG or WebP data)") from None
        raise DatasetError(f"corrupt or truncated image {path}: {_reason(error)}") from None
    return decoded.permute(1, 2, 0).numpy()


def _reason(error: Exception) -> str:
    """The last line of a torchvision error, without its C++ source location."""
    return re.sub(r"^.*\.cpp:\d+, ", "", str(error).strip().splitlines()[-1])


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] of any image file, so every reader (datasets, `msccl predict`) sees the same
    pixels: 8- or 16-bit, grey, grey + alpha, RGB, RGBA or palette.

    16-bit values v become round(v / 257), so a 16-bit copy of an 8-bit image (v8 * 257) gives exactly
    the 8-bit array; grey is replicated to three channels; a palette is looked up; alpha is dropped (the
    colour channels as stored, not composited on a background). A DatasetError names the file when it is
    missing, empty, corrupt, truncated, not an image or of another sample type (e.g. float TIFF).
    """
    path = Path(path)
    if path.suffix.lower() in _TORCHVISION_EXTENSIONS:
        image = _decode(path, ImageReadMode.RGB)  # palette looked up, grey replicated, alpha dropped
    else:  # other formats (bmp, tiff); ANYDEPTH keeps 16 bits for the same rounding as PNG
        image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        if image is None:
            raise DatasetError(f"cannot read image {path}: missing, empty, truncated or not an image")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return to_rgb8(image, f"image {path}")


def to_rgb8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """RGB uint8 [H, W, 3] of an image array, by `read_image`'s rules (so an array and the file it came
    from give the same pixels): [H, W] or [H, W, 1] grey replicated, [H, W, 2] grey + alpha and
    [H, W, 4] RGBA without their alpha, 16-bit values v as round(v / 257). A DatasetError naming `what`
    for any other shape or sample type."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise DatasetError(
            f"{what} has shape {tuple(image.shape)}: expected [H, W] or [H, W, 1] grey, [H, W, 2] grey + "
            "alpha, [H, W, 3] RGB or [H, W, 4] RGBA"
        )
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257), exactly
    elif image.dtype != np.uint8:
        raise DatasetError(f"{what} has {image.dtype} pixels: msccl reads 8- or 16-bit images")
    if image.shape[2] != 3:
        image = np.repeat(image[..., :1], 3, axis=2) if image.shape[2] < 3 else image[..., :3]
    return np.ascontiguousarray(image)


def read_label(path: str | Path, allow_16_bit: bool = False) -> np.ndarray:
    """Raw label ids as uint8 [H, W], exactly as stored (palette PNGs give their indices, not colours).

    A 3-channel label whose channels agree is accepted; a colour-coded label is refused (`NotAnIdMap`):
    msccl reads id maps (e.g. Cityscapes `*_gtFine_labelIds.png`, not `*_gtFine_color.png`).
    `allow_16_bit` returns a 16-bit file as stored, uint16 (label maps with ids up to 65535), instead of
    refusing values above 255.
    """
    path = Path(path)
    label = _decode(path, ImageReadMode.UNCHANGED)
    if label.shape[2] > 1:
        if not (label[..., 1:3] == label[..., :1]).all():
            raise NotAnIdMap(f"label {path} has {label.shape[2]} differing channels: expected an id map")
    label = label[..., 0]
    if label.dtype != np.uint8 and not allow_16_bit:
        if int(label.max()) > 255:
            raise DatasetError(f"label {path} has values up to {int(label.max())}: expected 8-bit ids")
        label = label.astype(np.uint8)
    return np.ascontiguousarray(label)


class LabelMap:
    """Raw label id -> train id, a lookup table applied once, when a label is read.

    `raw_ids` are all the ids a dataset's label files may contain (0..65535); those without a train id
    become ignore (255); any other value is "outside the map" and is an error, not silently ignored.
    The table has 256 entries when every raw id fits in 8 bits (8-bit labels go through OpenCV's LUT),
    65536 otherwise; 16-bit labels (uint16) are looked up in the table padded to 65536 entries.

    Args:
        described_as: what the map is, in errors ("label X has values [...] outside <described_as>").
    """

    def __init__(
        self, train_ids: Mapping[int, int], raw_ids: Iterable[int], described_as: str = "the label map"
    ) -> None:
        raw_ids = list(raw_ids)
        if raw_ids and not 0 <= min(raw_ids) <= max(raw_ids) < 65536:
            raise ValueError(f"raw ids must be in 0..65535, got {min(raw_ids)}..{max(raw_ids)}")
        size = 256 if max(raw_ids, default=0) < 256 else 65536
        self.table = np.full(size, IGNORE_INDEX, np.uint8)
        self.known = np.zeros(size, bool)
        self.known[raw_ids] = True
        self.described_as = described_as
        self._unknown = (~self.known[:256]).astype(np.uint8)
        for raw, train in train_ids.items():
            if not 0 <= raw < size or not self.known[raw]:
                raise ValueError(f"raw id {raw} has a train id but is not among the raw ids")
            self.table[raw] = train
        # 16-bit lookups: every uint16 value indexes these
        self._wide_table = np.pad(self.table, (0, 65536 - size), constant_values=IGNORE_INDEX)
        self._wide_known = np.pad(self.known, (0, 65536 - size), constant_values=False)

    @classmethod
    def reduce_zero(cls, num_classes: int) -> LabelMap:
        """0 -> ignore, k -> k - 1 for k in 1..num_classes (ADE20K, PASCAL-Context)."""
        return cls({k: k - 1 for k in range(1, num_classes + 1)}, range(num_classes + 1))

    @property
    def num_classes(self) -> int:
        return int(self.table[self.table != IGNORE_INDEX].max()) + 1

    @property
    def size(self) -> int:
        """Entries of the table: 256, or 65536 when a raw id needs 16 bits."""
        return len(self.table)

    def unknown_values(self, raw: np.ndarray) -> list[int]:
        """Values in `raw` that the map does not know, sorted."""
        present = np.flatnonzero(np.bincount(raw.ravel()))
        return present[~self._wide_known[present]].tolist()

    def apply(self, raw: np.ndarray, path: str | Path) -> np.ndarray:
        """Train ids (uint8, ignore 255) of the raw label (uint8 or uint16) read from `path` (named in
        errors)."""
        if raw.dtype == np.uint8:
            unknown = cv2.LUT(raw, self._unknown).any()  # a lookup and a scan: far cheaper than decoding
        elif raw.dtype == np.uint16:
            unknown = not self._wide_known[raw].all()
        else:
            raise DatasetError(f"label {path} is {raw.dtype}: expected 8- or 16-bit ids")
        if unknown:
            raise DatasetError(
                f"label {path} has values {self.unknown_values(raw)} outside {self.described_as}"
            )
        return cv2.LUT(raw, self.table[:256]) if raw.dtype == np.uint8 else self._wide_table[raw]

    def train_counts(self, raw_counts: np.ndarray) -> np.ndarray:
        """Pixels per train id [num_classes + 1] (last entry: ignore) from per-raw-id pixel counts (any
        length; ids beyond the table count as ignore)."""
        table = self._wide_table[: len(raw_counts)]
        train = np.where(table == IGNORE_INDEX, self.num_classes, table)
        return np.bincount(train, weights=raw_counts, minlength=self.num_classes + 1).astype(np.int64)


@dataclass(frozen=True)
class Pair:
    """One sample's files and its name (used for prediction files)."""

    image: Path
    label: Path
    name: str


def pair_files(
    images: Iterable[Path],
    label_for: Callable[[Path], Path],
    name_for: Callable[[Path], str] = lambda image: image.stem,
    labels_found: Iterable[Path] | None = None,
) -> tuple[list[Pair], list[str]]:
    """Pair every image with `label_for(image)`; list each image without label (and, when the labels
    present are given, each label without image) as a problem naming the file."""
    labels_found = None if labels_found is None else set(labels_found)
    pairs, problems, expected = [], [], set()
    for image in images:
        label = label_for(image)
        expected.add(label)
        if not image.is_file():
            problems.append(f"missing image {image}")
        elif not (label in labels_found if labels_found is not None else label.is_file()):
            problems.append(f"image {image} has no label (expected {label})")
        else:
            pairs.append(Pair(image, label, name_for(image)))
    problems += [f"label {label} has no image" for label in sorted((labels_found or set()) - expected)]
    return pairs, problems


def missing_folders(*folders: Path) -> list[str]:
    """A problem for each folder that does not exist."""
    return [f"folder {folder} does not exist" for folder in folders if not folder.is_dir()]


class FileSegmentation(Dataset):
    """Image/label file pairs found in a dataset's official layout; labels mapped to train ids once.

    Subclasses give the layout (`find_pairs`), the label map, class names and palette. Pairing problems
    (missing folders, images without labels) are found when the dataset is built; per-file problems
    (corrupt or truncated files, label values outside the map, size mismatches) when a sample is read.
    Each is a `DatasetError` naming the file and saying how to list them all (`msccl data check`).

    Args:
        root: the dataset folder as its publisher ships it.
        split: "train", "val" or "test" (those the dataset has: `splits`).
        transform: albumentations-style pipeline; default: ImageNet normalisation only.
        strict: raise on pairing problems; `msccl data check` passes False to list them all.
    """

    name: ClassVar[str]
    """The `--dataset` name of `msccl data check`."""
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    label_map: LabelMap

    def __init__(
        self, root: str | Path, split: str, transform: Transform | None = None, strict: bool = True
    ) -> None:
        self.root = Path(root).expanduser()
        if split not in self.splits:
            raise ValueError(f"{self.name} has splits {', '.join(self.splits)}, not {split!r}")
        self.split = split
        self.transform = transform
        if not self.root.is_dir():
            raise DatasetError(f"{self.name} root {self.root} does not exist or is not a folder")
        self.pairs, self.problems = self.find_pairs(split)
        if not self.pairs and not self.problems:
            self.problems = [f"no {split} images found under {self.root}"]
        if strict and self.problems:
            shown = "\n  ".join(self.problems[:10])
            more = f"\n  ... and {len(self.problems) - 10} more" if len(self.problems) > 10 else ""
            raise DatasetError(
                f"{self.name} {split} split in {self.root}:\n  {shown}{more}\n{self.check_hint}"
            )

    def find_pairs(self, split: str) -> tuple[list[Pair], list[str]]:
        """The split's pairs in the official layout, and the problems met finding them."""
        raise NotImplementedError

    @classmethod
    def available_splits(cls, root: str | Path) -> tuple[str, ...]:
        """The splits `msccl data check` walks under `root` by default: all of `splits`; a dataset whose
        optional splits depend on the tree says which it has."""
        return cls.splits

    def read_raw_label(self, path: Path) -> np.ndarray:
        """The raw ids of a label file, as `label_map` maps them (default: an 8-bit id map)."""
        return read_label(path)

    @property
    def check_options(self) -> str:
        """Extra `msccl data check` options that select this dataset's variant."""
        return ""

    @property
    def check_hint(self) -> str:
        command = f"msccl data check --dataset {self.name} --root {self.root}{self.check_options}"
        return f"Run `{command}` to list every problem in the dataset."

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 image [H, W, 3] and train-id label [H, W] (uint8, ignore 255), checked."""
        pair = self.pairs[index]
        with self._check_hint_on_error():
            image, raw = read_image(pair.image), self.read_raw_label(pair.label)
            if (problem := size_mismatch(image, raw, pair)) is not None:
                raise DatasetError(problem)
            return image, self.label_map.apply(raw, pair.label)

    def load_label(self, index: int) -> np.ndarray:
        """Only the train-id label (for class statistics without decoding images)."""
        pair = self.pairs[index]
        with self._check_hint_on_error():
            return self.label_map.apply(self.read_raw_label(pair.label), pair.label)

    @contextmanager
    def _check_hint_on_error(self) -> Iterator[None]:
        try:
            yield
        except DatasetError as error:
            raise DatasetError(f"{error}\n{self.check_hint}") from None

    def __getitem__(self, index: int) -> Sample:
        image, label = self.load(index)
        return to_sample(image, label, self.pairs[index].name, self.transform)


def size_mismatch(image: np.ndarray, label: np.ndarray, pair: Pair) -> str | None:
    """A problem message when image and label sizes differ."""
    if image.shape[:2] == label.shape[:2]:
        return None
    (ih, iw), (lh, lw) = image.shape[:2], label.shape[:2]
    return f"label {pair.label} is {lw}x{lh} but image {pair.image} is {iw}x{ih}"


def distinct_palette(num_colours: int, seed: int = 0) -> tuple[tuple[int, int, int], ...]:
    """Well-separated colours (golden-ratio hues, alternating brightness) for datasets without one."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(num_colours) * 0.618033988749895 + rng.random()) % 1.0
    hsv = np.stack([hues * 180, np.full(num_colours, 200), 255 - 70 * (np.arange(num_colours) % 3)], -1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    return tuple(tuple(int(v) for v in colour) for colour in rgb)


class ImageFolder(Dataset):
    """Every image in a folder (sorted by name), without labels: for `msccl predict`.

    An unreadable file does not stop the others: its sample carries no image, only its name, path and
    "unreadable" (the reason), so the prediction writer can list it at the end. Entries of the folder
    without an image extension (notes, subfolders) are not read; `skipped` holds them, for the same list.
    """

    def __init__(self, root: str | Path, transform: Transform | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"predict folder {self.root} does not exist")
        entries = sorted(self.root.iterdir())
        self.paths = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()]
        self.skipped = [p for p in entries if p not in self.paths]
        if not self.paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.root}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        """The sample, plus its file's "path" (prediction writers read the original image from it)."""
        path = self.paths[index]
        try:
            image = read_image(path)
        except DatasetError as error:
            return {"name": path.stem, "path": str(path), "unreadable": str(error)}
        return {**to_sample(image, None, path.stem, self.transform), "path": str(path)}
