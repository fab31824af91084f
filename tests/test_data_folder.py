"""Your own data (msccl.data.folder, msccl.data.class_table): both layouts, id maps (8 and 16 bit) and
colour masks mapped pixel for pixel by classes.yaml, every table error and planted fault named, tiny fit +
predict on a folder tree."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from msccl.cli import build_cli
from msccl.commands.data import main as data_main
from msccl.data import DatasetError, FolderSegmentation, LabelledFolder
from msccl.data.class_table import read_class_table
from msccl.data.example import write_example_tree
from msccl.data.sampling import RepeatFactorSampler
from tests.dataset_trees import tiny_fit_args, truncate, write_image

HEIGHT, WIDTH = 16, 24

# train ids are the order of the list, not the values: "road" (7) is train id 0
ID_TABLE = """\
ignore_values: [255, 3]
classes:
  - {value: 7, name: road, color: [128, 64, 128]}
  - {value: 0, name: background, color: [0, 0, 0]}
  - {values: [11, 12], name: building, color: [70, 70, 70]}
groups: {built: [road, building]}
"""
ID_TRAIN_IDS = {7: 0, 0: 1, 11: 2, 12: 2, 255: 255, 3: 255}  # written out independently of msccl

WIDE_TABLE = """\
ignore_values: [65535]
classes:
  - {value: 0, name: sea}
  - {values: [1000, 40000], name: land}
"""
WIDE_TRAIN_IDS = {0: 0, 1000: 1, 40000: 1, 65535: 255}

COLOUR_TABLE = """\
label_format: colors
ignore_colors: [[255, 255, 255]]
classes:
  - {name: sky, color: [70, 130, 180]}
  - {name: tree, color: [107, 142, 35]}
  - {name: car, color: [0, 0, 142]}
"""
COLOURS = {(70, 130, 180): 0, (107, 142, 35): 1, (0, 0, 142): 2, (255, 255, 255): 255}


def random_label(seed: int, values: list) -> np.ndarray:
    """[H, W] indices into `values`, every value present."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), (HEIGHT, WIDTH))
    index.ravel()[: len(values)] = np.arange(len(values))
    return index


def folder_tree(
    root: Path, table: str, raw_values: list[int], counts: dict[str, int], dtype=np.uint8
) -> dict:
    """images/<split>/*.{png,jpg} + labels/<split>/*.png id maps; returns {image path: raw label}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(table)
    raw_of = {}
    for split, count in counts.items():
        for index in range(count):
            name = f"{split}_{index}"
            image = root / "images" / split / f"{name}.{'jpg' if index % 2 else 'png'}"
            raw = np.asarray(raw_values, dtype)[random_label(len(raw_of), raw_values)]
            write_image(
                image, np.random.default_rng(index).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            )
            write_image(root / "labels" / split / f"{name}.png", raw)
            raw_of[image] = raw
    return raw_of


def expected(raw: np.ndarray, table: dict) -> np.ndarray:
    return np.vectorize(table.__getitem__, otypes=[np.uint8])(raw)


def test_id_maps_in_split_folders_map_pixel_for_pixel_by_list_order(tmp_path):
    raw_of = folder_tree(tmp_path, ID_TABLE, list(ID_TRAIN_IDS), {"train": 3, "val": 2})
    data = FolderSegmentation(str(tmp_path), num_workers=0)
    assert data.class_names == ("road", "background", "building") and data.num_classes == 3
    assert data.palette == ((128, 64, 128), (0, 0, 0), (70, 70, 70)) and data.ignore_index == 255
    assert data.class_groups == {"built": (0, 2)}
    data.setup("fit")
    for split, count in (("train", 3), ("val", 2)):
        dataset = data.datasets[split]
        assert len(dataset) == count and {p.image for p in dataset.pairs} <= set(raw_of)
        for index, pair in enumerate(dataset.pairs):
            np.testing.assert_array_equal(
                dataset.load_label(index), expected(raw_of[pair.image], ID_TRAIN_IDS)
            )
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (2, 3, HEIGHT, WIDTH)  # validation: whole images, normalised only
    with pytest.raises(DatasetError, match="has no test split.*test_split=val"):
        data.setup("test")


def test_16_bit_id_maps_and_8_bit_ones_in_one_tree(tmp_path):
    raw_of = folder_tree(tmp_path, WIDE_TABLE, list(WIDE_TRAIN_IDS), {"train": 2, "val": 1}, np.uint16)
    eight_bit = tmp_path / "labels" / "val" / "val_0.png"
    write_image(eight_bit, np.zeros((HEIGHT, WIDTH), np.uint8))  # values below 256 may be stored in 8 bits
    raw_of[tmp_path / "images" / "val" / "val_0.png"] = np.zeros((HEIGHT, WIDTH), np.uint16)
    for split in ("train", "val"):
        dataset = LabelledFolder(tmp_path, split)
        for index, pair in enumerate(dataset.pairs):
            np.testing.assert_array_equal(
                dataset.load(index)[1], expected(raw_of[pair.image], WIDE_TRAIN_IDS)
            )
    stray = tmp_path / "labels" / "train" / "train_1.png"
    write_image(stray, np.full((HEIGHT, WIDTH), 1001, np.uint16))
    dataset = LabelledFolder(tmp_path, "train")
    with pytest.raises(DatasetError, match=rf"label {stray} has values \[1001\] outside .*classes.yaml"):
        dataset.load([p.label for p in dataset.pairs].index(stray))
    write_image(stray, np.full((HEIGHT, WIDTH, 3), (1, 2, 3), np.uint8))  # a colour mask
    with pytest.raises(DatasetError, match=rf"{stray} has 3 differing channels.*label_format: colors"):
        dataset.load([p.label for p in dataset.pairs].index(stray))


def colour_list_tree(root: Path) -> dict:
    """images/*.webp + labels/*.png colour masks + splits/{train,val}.txt (one image in neither); returns
    {image: expected train ids}."""
    (root / "splits").mkdir(parents=True)
    (root / "classes.yaml").write_text(COLOUR_TABLE)
    colours = list(COLOURS)
    truth, lists = {}, {"train": "", "val": ""}
    for index, split in enumerate(["train", "train", "val", None]):
        image = root / "images" / f"frame{index}.webp"
        picks = random_label(index, colours)
        write_image(root / "labels" / f"frame{index}.png", np.asarray(colours, np.uint8)[picks])
        image.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(image), np.full((HEIGHT, WIDTH, 3), 99, np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])
        truth[image] = np.asarray(list(COLOURS.values()), np.uint8)[picks]
        if split is not None:
            lists[split] += f"frame{index}\n"
    for split, names in lists.items():
        (root / "splits" / f"{split}.txt").write_text(names)
    return truth


def test_colour_masks_with_split_lists(tmp_path):
    truth = colour_list_tree(tmp_path / "tree")
    data = FolderSegmentation(str(tmp_path / "tree"), num_workers=0)
    assert data.class_names == ("sky", "tree", "car") and data.palette[2] == (0, 0, 142)
    data.setup("fit")
    assert [p.name for p in data.datasets["train"].pairs] == ["frame0", "frame1"]
    assert [p.name for p in data.datasets["val"].pairs] == ["frame2"]
    for dataset in (data.datasets["train"], data.datasets["val"]):
        for index, pair in enumerate(dataset.pairs):
            np.testing.assert_array_equal(dataset.load_label(index), truth[pair.image])
    label = tmp_path / "tree" / "labels" / "frame1.png"
    mask = cv2.imread(str(label))
    mask[0, 0] = (3, 2, 1)  # BGR: the colour (1, 2, 3)
    cv2.imwrite(str(label), mask)
    with pytest.raises(DatasetError, match=rf"label {label} has colours \(1, 2, 3\) not in .*classes.yaml"):
        data.datasets["train"].load(1)


TABLE_ERRORS = {
    "duplicate value": (
        "classes:\n  - {value: 1, name: a}\n  - {values: [2, 1], name: b}\n",
        r"classes\[1\] \(b\): value 1 is also mapped by classes\[0\] \(a\)",
    ),
    "mapped and ignored": (
        "ignore_values: [2]\nclasses:\n  - {value: 1, name: a}\n  - {value: 2, name: b}\n",
        r"ignore_values\[0\]: value 2 is both ignored and mapped by classes\[1\] \(b\)",
    ),
    "colour twice": (
        "classes:\n  - {value: 1, name: a, color: [1, 2, 3]}\n  - {value: 2, name: b, color: [1, 2, 3]}\n",
        r"classes\[1\] \(b\): color \[1, 2, 3\] is given twice \(also classes\[0\] \(a\)\)",
    ),
    "missing name": ("classes:\n  - {value: 1, name: a}\n  - {value: 2}\n", r"classes\[1\] has no `name`"),
    "value and values": (
        "classes:\n  - {value: 1, values: [3], name: a}\n  - {value: 2, name: b}\n",
        r"classes\[0\] \(a\): give exactly one of `value: N` or `values: \[N, ...\]`",
    ),
    "misspelt key": (
        "classes:\n  - {value: 1, name: a, colour: [1, 2, 3]}\n  - {value: 2, name: b}\n",
        r"classes\[0\] \(a\): unknown key 'colour'",
    ),
    "value too large": (
        "classes:\n  - {value: 70000, name: a}\n  - {value: 2, name: b}\n",
        "not an integer in",
    ),
    "colour mask without colour": (
        "label_format: colors\nclasses:\n  - {name: a, color: [1, 2, 3]}\n  - {name: b}\n",
        r"classes\[1\] \(b\): no `color`",
    ),
    "one class": ("classes:\n  - {value: 1, name: a}\n", "must be a list of 2 to 255 classes"),
    "bad group": (
        "classes:\n  - {value: 1, name: a}\n  - {value: 2, name: b}\ngroups: {g: [a, c]}\n",
        r"groups.g: 'c' is not a class name",
    ),
    "not YAML": ("classes: [\n  - {value: 1", r"\d+: not valid YAML \(expected"),
}


@pytest.mark.parametrize("case", sorted(TABLE_ERRORS))
def test_class_table_errors_name_the_file_and_the_entry(tmp_path, case):
    text, message = TABLE_ERRORS[case]
    (tmp_path / "classes.yaml").write_text(text)
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'classes.yaml'}(:| line).*{message}") as error:
        read_class_table(tmp_path)
    assert "\n" not in str(error.value)


def test_missing_table_and_root_are_named(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'classes.yaml'} not found.*msccl data example"):
        FolderSegmentation(str(tmp_path))
    with pytest.raises(DatasetError, match=f"root {tmp_path / 'nowhere'} does not exist"):
        FolderSegmentation(str(tmp_path / "nowhere"))


def test_data_check_names_every_planted_fault(tmp_path, capsys):
    root = tmp_path / "ids"
    raw_of = folder_tree(root, ID_TABLE, list(ID_TRAIN_IDS), {"train": 7, "val": 2, "test": 1})
    train = sorted(path for path in raw_of if path.parent.name == "train")
    (root / "labels" / "train" / f"{train[0].stem}.png").unlink()  # image without label
    train[1].unlink()  # label without image
    write_image(train[2].with_suffix(".bmp"), np.zeros((HEIGHT, WIDTH, 3), np.uint8))  # two images, one name
    truncate(train[4])  # unreadable image
    write_image(root / "labels" / "train" / f"{train[5].stem}.png", np.full((HEIGHT, WIDTH), 9, np.uint8))
    write_image(root / "labels" / "train" / f"{train[6].stem}.png", np.zeros((HEIGHT, 2 * WIDTH), np.uint8))
    code = data_main(["check", "--dataset", "folder", "--root", str(root), "--workers", "0"])
    out = capsys.readouterr().out
    labels = root / "labels" / "train"
    for problem in [
        f"image {train[0]} has no label (expected {labels / train[0].stem}.png)",
        f"label {labels / train[1].stem}.png has no image",
        f"images {train[2].with_suffix('.bmp')} and {train[2]} have the same name: rename one",
        f"image {train[4]}",
        f"label {labels / train[5].stem}.png has values [9] outside {root / 'classes.yaml'}",
        f"label {labels / train[6].stem}.png is 48x16 but image {train[6]} is 24x16",
    ]:
        assert problem in out, problem
    assert code == 1 and "6 problems:" in out and "test: 1 image/label pairs, 0 problems" in out
    assert "pixel share (%)" in out and "building" in out and "(ignore)" in out

    truth = colour_list_tree(tmp_path / "colours")
    (tmp_path / "colours" / "splits" / "val.txt").write_text("frame0\nframe9\n\nframe2\nframe2.webp\n")
    label = tmp_path / "colours" / "labels" / "frame1.png"
    write_image(label, np.full((HEIGHT, WIDTH, 3), 7, np.uint8))
    assert (
        data_main(["check", "--dataset", "folder", "--root", str(tmp_path / "colours"), "--workers", "0"])
        == 1
    )
    out = capsys.readouterr().out
    val_list = tmp_path / "colours" / "splits" / "val.txt"
    for problem in [
        f"{val_list} line 1: 'frame0' is also in splits/train.txt",
        f"{val_list} line 2: no image named 'frame9'",
        f"{val_list} line 5: 'frame2' is listed twice",
        f"label {label} has colours (7, 7, 7) not in",
    ]:
        assert problem in out, problem
    assert "train: 2 image/label pairs" in out and len(truth) == 4


def test_example_tree_refuses_a_used_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="exists and is not an empty folder"):
        write_example_tree(tmp_path, 1, 1, 32)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_fit_with_repeat_factors_then_predict_with_the_table_palette(in_tmp_dir):
    root = in_tmp_dir / "my_data"
    assert data_main(["example", "--root", str(root), "--train", "4", "--val", "2", "--size", "64"]) == 0
    assert data_main(["check", "--dataset", "folder", "--root", str(root), "--workers", "0"]) == 0
    args = tiny_fit_args(
        "folder.yaml", root, "--data.init_args.repeat_factor_threshold=0.3", "--run_dir=runs/mine"
    )
    cli = build_cli(args)
    assert cli.trainer.global_step == 2 and cli.model.num_classes == 8
    assert cli.model.class_names == read_class_table(root).names
    assert isinstance(cli.trainer.train_dataloader.sampler.order, RepeatFactorSampler)

    output = in_tmp_dir / "predictions"
    predict = [
        "predict",
        *[arg for arg in args[1:] if not arg.startswith(("--run_dir", "--trainer.limit", "--trainer.max"))],
        "--ckpt_path=runs/mine/checkpoints/last.ckpt",
        f"--data.init_args.predict_dir={root / 'images' / 'val'}",
        f"--output={output}",
    ]
    build_cli(predict)
    palette = np.array(read_class_table(root).palette, np.uint8)
    for image in sorted((root / "images" / "val").iterdir()):
        label = np.asarray(Image.open(output / "labels" / image.name))  # train ids (also of a palette PNG)
        assert label.shape == (64, 64) and label.max() < 8
        shown = cv2.cvtColor(cv2.imread(str(output / "overlays" / image.name)), cv2.COLOR_BGR2RGB)
        original = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
        blend = (0.5 * palette[label].astype(np.float32) + 0.5 * original.astype(np.float32)).round()
        np.testing.assert_array_equal(shown[:64, :64], blend.astype(np.uint8))  # above its legend
