"""A legend under a label overlay: which colour is which class, drawn into the picture itself.

An overlay written as a PNG (`msccl predict`, `msccl.Segmenter.overlay`) travels alone, so it carries its
own key: a white band below the image with a swatch and the name of every class present in the label map,
the most frequent first. Drawn with OpenCV (no matplotlib): predicting needs no `plots` extra. The image
keeps its pixels and its place (top left); the canvas is widened when a legend entry is wider than it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["add_legend", "present_classes"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SCALE = 0.4
_ROW = 16  # pixels per legend row
_SWATCH = 10
_GAP = 8  # between entries, and the margins


def present_classes(label: np.ndarray, num_classes: int) -> list[int]:
    """The class ids in `label` (ids >= num_classes, such as the ignore id, left out), most pixels first
    (ties: the lower id first)."""
    counts = np.bincount(label.ravel(), minlength=num_classes)[:num_classes]
    present = np.flatnonzero(counts)
    return present[np.argsort(-counts[present], kind="stable")].tolist()


def add_legend(
    picture: np.ndarray, label: np.ndarray, class_names: Sequence[str], palette: np.ndarray
) -> np.ndarray:
    """RGB uint8 [H + band, max(W, widest entry), 3]: `picture` [H, W, 3] at the top left, on white, and
    below it one entry (colour swatch + name) per class of `label` [H, W] in `palette` [C, 3] colours."""
    height, width = picture.shape[:2]
    entries = []
    for class_id in present_classes(label, len(class_names)):
        text = class_names[class_id].encode("ascii", "replace").decode()  # Hershey fonts are ASCII only
        text_width = cv2.getTextSize(text, _FONT, _SCALE, 1)[0][0]
        entries.append((class_id, text, _SWATCH + 4 + text_width))
    canvas_width = max(width, *(w + 2 * _GAP for *_, w in entries)) if entries else width
    rows, x = [[]], _GAP
    for entry in entries:  # flow the entries into rows of the canvas width
        if rows[-1] and x + entry[2] + _GAP > canvas_width:
            rows.append([])
            x = _GAP
        rows[-1].append((x, entry))
        x += entry[2] + _GAP
    band = (len(rows) * _ROW + _GAP // 2) if entries else 0
    canvas = np.full((height + band, canvas_width, 3), 255, np.uint8)
    canvas[:height, :width] = picture
    for row, placed in enumerate(rows):
        top = height + _GAP // 2 + row * _ROW
        for x, (class_id, text, _) in placed:
            colour = tuple(int(v) for v in palette[class_id])
            corner = (x, top + (_ROW - _SWATCH) // 2)
            cv2.rectangle(canvas, corner, (corner[0] + _SWATCH, corner[1] + _SWATCH), colour, cv2.FILLED)
            cv2.rectangle(canvas, corner, (corner[0] + _SWATCH, corner[1] + _SWATCH), (0, 0, 0), 1)
            baseline = top + _ROW - 4
            cv2.putText(canvas, text, (x + _SWATCH + 4, baseline), _FONT, _SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
