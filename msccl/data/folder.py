"""Your own data: a folder of images, a folder of labels and a class table, `classes.yaml`.

    root/classes.yaml
    root/images/{train,val[,test]}/<name>.<png|jpg|jpeg|bmp|tif|tiff|webp>
    root/labels/{train,val[,test]}/<name>.png          matched to the image by name (stem)
or, when `root/splits/` exists,
    root/images/<name>.<ext>, root/labels/<name>.png, root/splits/{train,val[,test]}.txt (one name a line)

`classes.yaml` says how label values become classes (its schema and checks: `msccl.data.class_table`).
Reading, checking, the label map and the training pipeline are the file datasets' own
(`msccl.data.base`, `msccl.data.datamodule`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msccl.data.base import IMAGE_EXTENSIONS, FileSegmentation, Pair, Transform, missing_folders, pair_files
from msccl.data.class_table import ClassTable, read_class_table
from msccl.data.datamodule import FileDataModule

__all__ = ["FolderSegmentation", "LabelledFolder"]


class LabelledFolder(FileSegmentation):
    """One split of a folder dataset (layout in the module docstring), labels mapped by `classes.yaml`.

    Pairing problems (images without labels, labels without images, two images of one name, split-list
    names without an image or in two splits) are found when the dataset is built; per-file problems
    (unreadable files, values or colours outside the table, size mismatches) when a sample is read.

    Args:
        classes: the root's class table, when already read (the data module passes its own).
    """

    name = "folder"
    splits = ("train", "val", "test")

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        strict: bool = True,
        classes: ClassTable | None = None,
    ) -> None:
        self.classes = classes or read_class_table(root)
        self.class_names, self.palette = self.classes.names, self.classes.palette
        self.label_map = self.classes.label_map()
        self._read_raw_label = self.classes.label_reader()
        super().__init__(root, split, transform, strict)

    @classmethod
    def available_splits(cls, root: str | Path) -> tuple[str, ...]:
        """train and val (reported when missing), and test when the tree has one."""
        root = Path(root).expanduser()
        has_test = (root / "splits" / "test.txt").is_file() or (root / "images" / "test").is_dir()
        return ("train", "val", "test") if has_test else ("train", "val")

    def read_raw_label(self, path: Path) -> np.ndarray:
        return self._read_raw_label(path)

    def find_pairs(self, split: str) -> tuple[list[Pair], list[str]]:
        if split not in self.available_splits(self.root):  # only the optional test split can be absent
            return [], [
                f"{self.root} has no {split} split (images/{split}/ or splits/{split}.txt): add one, "
                "or evaluate another split with --data.init_args.test_split=val"
            ]
        if (self.root / "splits").is_dir():
            return self._listed_pairs(split)
        return self._folder_pairs(split)

    def _folder_pairs(self, split: str) -> tuple[list[Pair], list[str]]:
        """images/<split>/<name>.<ext> with labels/<split>/<name>.png."""
        image_dir, label_dir = self.root / "images" / split, self.root / "labels" / split
        if problems := missing_folders(image_dir, label_dir):
            return [], problems
        images, problems = _images_by_name(image_dir)
        pairs, pair_problems = pair_files(
            images.values(),
            lambda image: label_dir / f"{image.stem}.png",
            labels_found=label_dir.glob("*.png"),
        )
        return pairs, problems + pair_problems

    def _listed_pairs(self, split: str) -> tuple[list[Pair], list[str]]:
        """The names of splits/<split>.txt in images/ with labels/<name>.png."""
        image_dir, label_dir, list_dir = self.root / "images", self.root / "labels", self.root / "splits"
        if problems := missing_folders(image_dir, label_dir, list_dir):
            return [], problems
        images, problems = _images_by_name(image_dir)
        others = {other: set(_split_names(list_dir / f"{other}.txt").values()) for other in self.splits}
        del others[split]
        chosen: dict[str, Path] = {}
        for line, name in _split_names(list_dir / f"{split}.txt").items():
            where = f"{list_dir / f'{split}.txt'} line {line}"
            if name not in images:
                problems.append(f"{where}: no image named {name!r} in {image_dir}")
            elif name in chosen:
                problems.append(f"{where}: {name!r} is listed twice")
            else:
                if leaks := [other for other, names in others.items() if name in names]:
                    problems.append(
                        f"{where}: {name!r} is also in splits/{leaks[0]}.txt (a split must not leak)"
                    )
                chosen[name] = images[name]
        pairs, pair_problems = pair_files(
            sorted(chosen.values()), lambda image: label_dir / f"{image.stem}.png"
        )
        return pairs, problems + pair_problems


def _images_by_name(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The images of `folder` by name (stem), sorted; two images of one name are a problem (which label?)."""
    images: dict[str, Path] = {}
    problems = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in images:
            problems.append(f"images {images[path.stem]} and {path} have the same name: rename one")
            continue
        images[path.stem] = path
    return images, problems


def _split_names(path: Path) -> dict[int, str]:
    """Line number -> name of a split list (blank lines and # comments skipped; an image's extension is
    dropped); empty when the file does not exist."""
    if not path.is_file():
        return {}
    names = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if name:
            names[number] = (
                name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name
            )
    return names


class FolderSegmentation(FileDataModule):
    """Your own data from `root` (layout in `msccl.data.folder`, `classes.yaml` in `msccl.data.class_table`),
    trained like the built-in datasets: the paper's augmentation, optional repeat-factor sampling, any model.

    Class names, their number, palette and groups come from `root/classes.yaml` (read and validated
    here, so a bad table stops the run before any model is built). `msccl test` evaluates `test_split`.
    """

    dataset_class = LabelledFolder

    def __init__(self, root: str, crop_size: int | tuple[int, int] = 512, **kwargs) -> None:
        super().__init__(root, crop_size=crop_size, **kwargs)
        self.classes = read_class_table(root)
        self.class_names, self.palette = self.classes.names, self.classes.palette
        self.class_groups = self.classes.groups

    def make_dataset(self, split: str, transform: Transform) -> LabelledFolder:
        return LabelledFolder(self.root, split, transform, classes=self.classes)
