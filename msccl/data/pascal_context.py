"""PASCAL-Context (Mottaghi et al., 2014), the 59-class benchmark (docs/method.md C1).

The layout most toolkits document (mmsegmentation's; labels made by its converter from the Detail API):

    root/VOCdevkit/VOC2010/JPEGImages/<name>.jpg
    root/VOCdevkit/VOC2010/SegmentationClassContext/<name>.png
    root/VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt

`root` may also be the `VOCdevkit` or `VOC2010` folder. A folder-per-split variant (the original
authors' code) is read too: root/{train,val}/image/<stem>.jpg with root/{train,val}/label/<stem>.png.
Raw label 0 (background) becomes ignore and k becomes k - 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from msccl.data.base import FileSegmentation, LabelMap, Pair, missing_folders, pair_files
from msccl.data.datamodule import FileDataModule

__all__ = ["PASCAL_CONTEXT_CLASSES", "PascalContext", "PascalContextSegmentation"]

# the 59 classes in train-id order (alphabetical, as mmsegmentation's converter writes them) and colours
PASCAL_CONTEXT_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("aeroplane", (180, 120, 120)),
    ("bag", (6, 230, 230)),
    ("bed", (80, 50, 50)),
    ("bedclothes", (4, 200, 3)),
    ("bench", (120, 120, 80)),
    ("bicycle", (140, 140, 140)),
    ("bird", (204, 5, 255)),
    ("boat", (230, 230, 230)),
    ("book", (4, 250, 7)),
    ("bottle", (224, 5, 255)),
    ("building", (235, 255, 7)),
    ("bus", (150, 5, 61)),
    ("cabinet", (120, 120, 70)),
    ("car", (8, 255, 51)),
    ("cat", (255, 6, 82)),
    ("ceiling", (143, 255, 140)),
    ("chair", (204, 255, 4)),
    ("cloth", (255, 51, 7)),
    ("computer", (204, 70, 3)),
    ("cow", (0, 102, 200)),
    ("cup", (61, 230, 250)),
    ("curtain", (255, 6, 51)),
    ("dog", (11, 102, 255)),
    ("door", (255, 7, 71)),
    ("fence", (255, 9, 224)),
    ("floor", (9, 7, 230)),
    ("flower", (220, 220, 220)),
    ("food", (255, 9, 92)),
    ("grass", (112, 9, 255)),
    ("ground", (8, 255, 214)),
    ("horse", (7, 255, 224)),
    ("keyboard", (255, 184, 6)),
    ("light", (10, 255, 71)),
    ("motorbike", (255, 41, 10)),
    ("mountain", (7, 255, 255)),
    ("mouse", (224, 255, 8)),
    ("person", (102, 8, 255)),
    ("plate", (255, 61, 6)),
    ("platform", (255, 194, 7)),
    ("pottedplant", (255, 122, 8)),
    ("road", (0, 255, 20)),
    ("rock", (255, 8, 41)),
    ("sheep", (255, 5, 153)),
    ("shelves", (6, 51, 255)),
    ("sidewalk", (235, 12, 255)),
    ("sign", (160, 150, 20)),
    ("sky", (0, 163, 255)),
    ("snow", (140, 140, 140)),
    ("sofa", (250, 10, 15)),
    ("table", (20, 255, 0)),
    ("track", (31, 255, 0)),
    ("train", (255, 31, 0)),
    ("tree", (255, 224, 0)),
    ("truck", (153, 255, 0)),
    ("tvmonitor", (0, 0, 255)),
    ("wall", (255, 71, 0)),
    ("water", (0, 235, 255)),
    ("window", (0, 173, 255)),
    ("wood", (31, 0, 255)),
)


def _png_in(label_dir: Path) -> Callable[[Path], Path]:
    """The label of an image: the PNG of the same stem in `label_dir`."""
    return lambda image: label_dir / f"{image.stem}.png"


def _voc_folder(root: Path) -> Path | None:
    """The VOC2010 folder under `root` (or `root` itself), if this is the VOC layout."""
    for candidate in (root, root / "VOC2010", root / "VOCdevkit" / "VOC2010"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return None


class PascalContextSegmentation(FileSegmentation):
    """PASCAL-Context 59: the images listed in the split file with their 59-class label PNGs."""

    name = "pascal_context"
    splits = ("train", "val")
    class_names = tuple(name for name, _ in PASCAL_CONTEXT_CLASSES)
    palette = tuple(colour for _, colour in PASCAL_CONTEXT_CLASSES)
    label_map = LabelMap.reduce_zero(len(PASCAL_CONTEXT_CLASSES))

    def find_pairs(self, split: str) -> tuple[list[Pair], list[str]]:
        voc = _voc_folder(self.root)
        if voc is not None:
            return self._voc_pairs(voc, split)
        image_dir, label_dir = self.root / split / "image", self.root / split / "label"
        if not image_dir.is_dir() and not any((self.root / s / "image").is_dir() for s in self.splits):
            return [], [
                f"no PASCAL-Context layout under {self.root}: expected VOCdevkit/VOC2010/JPEGImages with "
                "SegmentationClassContext/ and ImageSets/SegmentationContext/, or train/image + train/label"
            ]
        problems = missing_folders(image_dir, label_dir)
        if problems:
            return [], problems
        return pair_files(
            sorted(image_dir.glob("*.jpg")), _png_in(label_dir), labels_found=label_dir.glob("*.png")
        )

    @staticmethod
    def _voc_pairs(voc: Path, split: str) -> tuple[list[Pair], list[str]]:
        label_dir = voc / "SegmentationClassContext"
        split_file = voc / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        problems = missing_folders(label_dir)
        if not split_file.is_file():
            problems.append(f"split list {split_file} does not exist")
        if problems:
            return [], problems
        names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        # JPEGImages holds all of VOC2010: only the listed images count, so no orphan-label check
        return pair_files([voc / "JPEGImages" / f"{name}.jpg" for name in names], _png_in(label_dir))


class PascalContext(FileDataModule):
    """PASCAL-Context 59 from `root`; crop 480x480 (mmsegmentation's recipe: the paper released none).

    Image sizes vary: validation batches of one. `msccl test` evaluates `val` (there is no test split).
    """

    dataset_class = PascalContextSegmentation
    class_names = PascalContextSegmentation.class_names
    palette = PascalContextSegmentation.palette

    def __init__(
        self,
        root: str,
        crop_size: int | tuple[int, int] = 480,
        test_split: str = "val",
        val_batch_size: int | None = 1,
        **kwargs,
    ) -> None:
        super().__init__(
            root, crop_size=crop_size, test_split=test_split, val_batch_size=val_batch_size, **kwargs
        )
