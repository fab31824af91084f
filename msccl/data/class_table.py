"""The class table of a folder dataset, `classes.yaml`: how label values become classes.

Train ids are the order of `classes`:

    ignore_values: [255]                       # raw values never learnt nor scored
    classes:
      - {value: 0, name: background, color: [0, 0, 0]}
      - {value: 7, name: road, color: [128, 64, 128]}
      - {values: [11, 12], name: building, color: [70, 70, 70]}   # several raw values merged
    groups: {built: [road, building]}          # optional: class groups whose mean IoU is reported

Label files are id maps (8- or 16-bit PNGs, values 0..65535) or, with `label_format: colors`, RGB colour
masks: then each class's `color` is its key, `ignore_colors` lists the colours never learnt, and
`value`/`ignore_values` are not used. A value or colour the table neither maps nor ignores is an error
naming the file and the value: nothing is silently ignored. The folder layout itself is
`msccl.data.folder`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from msccl.data.base import (
    IGNORE_INDEX,
    DatasetError,
    LabelMap,
    NotAnIdMap,
    distinct_palette,
    read_image,
    read_label,
)

__all__ = ["CLASSES_FILE", "ClassTable", "read_class_table"]

CLASSES_FILE = "classes.yaml"
Colour = tuple[int, int, int]
_TOP_KEYS = ("classes", "ignore_values", "ignore_colors", "label_format", "groups")
_CLASS_KEYS = ("name", "value", "values", "color")


@dataclass(frozen=True)
class ClassTable:
    """A validated `classes.yaml`: the classes in train-id order and what marks them in the label files.

    `values[c]` are the raw ids of class c (id maps); `palette[c]` its colour (the key of colour masks,
    the predict overlays' colour either way).
    """

    path: Path
    label_format: str
    names: tuple[str, ...]
    palette: tuple[Colour, ...]
    values: tuple[tuple[int, ...], ...] = ()
    ignore_values: tuple[int, ...] = ()
    ignore_colors: tuple[Colour, ...] = ()
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def label_map(self) -> LabelMap:
        """Raw id (id maps) or colour index (colour masks, see `_ColourMaskReader`) -> train id."""
        if self.label_format == "colors":
            return LabelMap(
                {c: c for c in range(len(self.names))}, range(len(self.palette) + len(self.ignore_colors))
            )
        train_ids = {value: train_id for train_id, values in enumerate(self.values) for value in values}
        return LabelMap(
            train_ids,
            [*train_ids, *self.ignore_values],
            described_as=f"{self.path} (neither a class value nor in ignore_values)",
        )

    def label_reader(self) -> Callable[[Path], np.ndarray]:
        """Reads a label file into the raw ids `label_map` maps."""
        return _LABEL_READERS[self.label_format](self)


class _IdMapReader:
    """An 8- or 16-bit id map, read as stored."""

    def __init__(self, table: ClassTable) -> None:
        self.table_path = table.path

    def __call__(self, path: Path) -> np.ndarray:
        try:
            return read_label(path, allow_16_bit=True)
        except NotAnIdMap as error:
            raise NotAnIdMap(
                f"{error} (colour masks: set `label_format: colors` in {self.table_path})"
            ) from None


class _ColourMaskReader:
    """An RGB colour mask -> the index of each pixel's colour in the table (classes, then ignore_colors).

    Colours are packed to 24-bit codes and looked up by binary search in the sorted codes of the table.
    """

    def __init__(self, table: ClassTable) -> None:
        self.table_path = table.path
        codes = _colour_codes(np.asarray([*table.palette, *table.ignore_colors], np.uint32))
        self.order = np.argsort(codes)
        self.sorted_codes = codes[self.order]
        self.dtype = np.uint8 if len(codes) <= 256 else np.uint16

    def __call__(self, path: Path) -> np.ndarray:
        codes = _colour_codes(read_image(path))
        position = np.searchsorted(self.sorted_codes, codes).clip(max=len(self.sorted_codes) - 1)
        known = self.sorted_codes[position] == codes
        if not known.all():
            unknown = np.unique(codes[~known])
            shown = ", ".join(str(_colour_of(code)) for code in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise DatasetError(
                f"label {path} has colours {shown}{more} not in {self.table_path} "
                "(neither a class color nor in ignore_colors)"
            )
        return self.order[position].astype(self.dtype)


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _colour_of(code: int) -> Colour:
    return (int(code) >> 16 & 255, int(code) >> 8 & 255, int(code) & 255)


# label_format -> how a label file is read (the label map then does the rest)
_LABEL_READERS: dict[str, Callable[[ClassTable], Callable[[Path], np.ndarray]]] = {
    "ids": _IdMapReader,
    "colors": _ColourMaskReader,
}


def read_class_table(root: str | Path) -> ClassTable:
    """The validated `classes.yaml` of `root`; a DatasetError naming the file and the entry otherwise."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"folder dataset root {root} does not exist or is not a folder")
    path = root / CLASSES_FILE
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: a folder dataset needs a class table (docs/datasets.md, 'Your own data'; "
            "`msccl data example --root DIR` writes a complete example)"
        )
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    return _ClassTableParser(path).parse(document)


class _ClassTableParser:
    """Validates a parsed classes.yaml; every error names the file and the entry."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str) -> DatasetError:
        return DatasetError(f"{self.path}: {message}")

    def parse(self, document: Any) -> ClassTable:
        if not isinstance(document, dict) or "classes" not in document:
            raise self.fail("expected a mapping with a `classes:` list (docs/datasets.md, 'Your own data')")
        if unknown := sorted(set(document) - set(_TOP_KEYS)):
            raise self.fail(f"unknown key {unknown[0]!r} (known: {', '.join(_TOP_KEYS)})")
        label_format = document.get("label_format", "ids")
        if label_format not in _LABEL_READERS:
            raise self.fail(f"label_format must be one of {', '.join(_LABEL_READERS)}, not {label_format!r}")
        entries = document["classes"]
        if not isinstance(entries, list) or not 2 <= len(entries) <= IGNORE_INDEX:
            raise self.fail(f"`classes` must be a list of 2 to {IGNORE_INDEX} classes (train ids 0..254)")
        names, colours, values = [], [], []
        for index, entry in enumerate(entries):
            name, colour, entry_values = self.parse_class(index, entry, label_format)
            where = f"classes[{index}] ({name})"
            if name in names:
                raise self.fail(f"{where}: name {name!r} is also classes[{names.index(name)}]'s")
            names.append(name)
            colours.append(colour)
            values.append(entry_values)
        ignore_values = self.parse_ignore_values(document, label_format, names, values)
        ignore_colors = self.parse_ignore_colors(document, label_format)
        given = [(f"classes[{i}] ({names[i]})", c) for i, c in enumerate(colours) if c is not None]
        given += [(f"ignore_colors[{i}]", c) for i, c in enumerate(ignore_colors)]
        seen: dict[Colour, str] = {}
        for where, colour in given:
            if colour in seen:
                raise self.fail(f"{where}: color {list(colour)} is given twice (also {seen[colour]})")
            seen[colour] = where
        fallback = distinct_palette(len(names))
        return ClassTable(
            path=self.path,
            label_format=label_format,
            names=tuple(names),
            palette=tuple(c if c is not None else fallback[i] for i, c in enumerate(colours)),
            values=tuple(values) if label_format == "ids" else (),
            ignore_values=ignore_values,
            ignore_colors=ignore_colors,
            groups=self.parse_groups(document.get("groups") or {}, names),
        )

    def parse_class(
        self, index: int, entry: Any, label_format: str
    ) -> tuple[str, Colour | None, tuple[int, ...]]:
        if not isinstance(entry, dict):
            raise self.fail(f"classes[{index}] must be a mapping like {{value: 0, name: background}}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail(f"classes[{index}] has no `name` (a non-empty string)")
        where = f"classes[{index}] ({name})"
        if unknown := sorted(set(entry) - set(_CLASS_KEYS)):
            raise self.fail(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_CLASS_KEYS)})")
        colour = self.parse_colour(where, entry["color"]) if "color" in entry else None
        if label_format == "colors":
            if colour is None:
                raise self.fail(
                    f"{where}: no `color` (with label_format: colors the colour is the class key)"
                )
            if "value" in entry or "values" in entry:
                raise self.fail(f"{where}: `value(s)` is unused with label_format: colors; remove it")
            return name, colour, ()
        if ("value" in entry) == ("values" in entry):
            raise self.fail(f"{where}: give exactly one of `value: N` or `values: [N, ...]`")
        raw = [entry["value"]] if "value" in entry else entry["values"]
        if not isinstance(raw, list) or not raw:
            raise self.fail(f"{where}: `values` must be a non-empty list of label values")
        return name, colour, tuple(self.parse_value(where, value) for value in raw)

    def parse_value(self, where: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise self.fail(f"{where}: label value {value!r} is not an integer in 0..65535")
        return value

    def parse_colour(self, where: str, colour: Any) -> Colour:
        if (
            not isinstance(colour, list)
            or len(colour) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255 for v in colour)
        ):
            raise self.fail(f"{where}: color {colour!r} is not [R, G, B] with integers in 0..255")
        return (colour[0], colour[1], colour[2])

    def parse_ignore_values(
        self, document: dict, label_format: str, names: list[str], values: list[tuple[int, ...]]
    ) -> tuple[int, ...]:
        owner: dict[int, str] = {}
        for index, class_values in enumerate(values):
            where = f"classes[{index}] ({names[index]})"
            for value in class_values:
                if owner.get(value) == where:
                    raise self.fail(f"{where}: value {value} is listed twice")
                if value in owner:
                    raise self.fail(f"{where}: value {value} is also mapped by {owner[value]}")
                owner[value] = where
        raw = document.get("ignore_values") or []
        if raw and label_format == "colors":
            raise self.fail("ignore_values is unused with label_format: colors; list ignore_colors instead")
        if not isinstance(raw, list):
            raise self.fail("ignore_values must be a list of label values, e.g. [255]")
        ignored: list[int] = []
        for index, value in enumerate(raw):
            where = f"ignore_values[{index}]"
            value = self.parse_value(where, value)
            if value in owner:
                raise self.fail(f"{where}: value {value} is both ignored and mapped by {owner[value]}")
            if value in ignored:
                raise self.fail(f"{where}: value {value} is listed twice")
            ignored.append(value)
        return tuple(ignored)

    def parse_ignore_colors(self, document: dict, label_format: str) -> tuple[Colour, ...]:
        raw = document.get("ignore_colors") or []
        if raw and label_format != "colors":
            raise self.fail("ignore_colors applies to label_format: colors only; list ignore_values instead")
        if not isinstance(raw, list):
            raise self.fail("ignore_colors must be a list of [R, G, B] colours")
        return tuple(self.parse_colour(f"ignore_colors[{index}]", colour) for index, colour in enumerate(raw))

    def parse_groups(self, groups: Any, names: list[str]) -> dict[str, tuple[int, ...]]:
        if not isinstance(groups, dict):
            raise self.fail("groups must map a group name to a list of class names")
        parsed = {}
        for group, members in groups.items():
            if not isinstance(members, list) or not members:
                raise self.fail(f"groups.{group}: expected a non-empty list of class names")
            if unknown := [member for member in members if member not in names]:
                raise self.fail(f"groups.{group}: {unknown[0]!r} is not a class name")
            parsed[str(group)] = tuple(names.index(member) for member in members)
        return parsed
