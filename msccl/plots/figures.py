"""The figures msccl draws, each a function from arrays to a saved PNG (matplotlib's object API: no
pyplot state, no display backend, safe in worker threads and notebooks alike)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError("msccl's pictures need matplotlib: pip install 'msccl[plots]'") from None

__all__ = [
    "confusion_figure",
    "image_pairs_figure",
    "iou_figure",
    "pixel_share_figure",
    "read_confusion_csv",
    "row_normalised",
    "save",
    "write_evaluation_figures",
]

ANNOTATED_CLASSES = 25
"""Up to this many classes the confusion matrix prints its values in the cells."""


def save(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write `figure` as a PNG (its folder created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row (true class) divided by its pixel count: the share of that class predicted as each
    class; rows of classes absent from the targets stay 0."""
    confusion = np.asarray(confusion, np.float64)
    totals = confusion.sum(1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix (rows: true class, columns: prediction) with class names."""
    shares = row_normalised(confusion)
    count = len(class_names)
    side = min(20.0, 2.5 + 0.45 * count)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class's pixels")
    axes.set_xticks(range(count), class_names, rotation=90, fontsize=8)
    axes.set_yticks(range(count), class_names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if count <= ANNOTATED_CLASSES:
        for (row, column), value in np.ndenumerate(shares):
            if value >= 0.005:
                colour = "white" if value > 0.5 else "black"
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    axes.set_title(title or "confusion matrix (row-normalised)")
    return figure


def iou_figure(iou: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Per-class IoU (%) as horizontal bars, the mIoU as a line; classes without IoU marked n/a."""
    iou = 100 * np.asarray(iou, np.float64)
    count = len(class_names)
    figure = Figure(figsize=(7, 1.2 + 0.28 * count), layout="constrained")
    axes = figure.add_subplot()
    rows = np.arange(count)
    axes.barh(rows, np.nan_to_num(iou), color="tab:blue")
    for row, value in zip(rows, iou, strict=True):
        axes.text(
            0.5 if np.isnan(value) else value + 0.5,
            row,
            "n/a" if np.isnan(value) else f"{value:.1f}",
            va="center",
            fontsize=7,
        )
    if not np.isnan(iou).all():
        mean = np.nanmean(iou)
        axes.axvline(mean, color="tab:red", linestyle="--", label=f"mIoU {mean:.2f}")
        axes.legend(loc="lower right")
    axes.set_yticks(rows, class_names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 105)
    axes.set_xlabel("IoU (%)")
    axes.set_title(title or "per-class IoU")
    return figure


def pixel_share_figure(
    shares: np.ndarray, class_names: Sequence[str], palette: np.ndarray, title: str = ""
) -> Figure:
    """Share (%) of the labelled pixels per class, each bar in its class colour."""
    shares = 100 * np.asarray(shares, np.float64)
    count = len(class_names)
    figure = Figure(figsize=(7, 1.2 + 0.28 * count), layout="constrained")
    axes = figure.add_subplot()
    rows = np.arange(count)
    axes.barh(rows, shares, color=np.asarray(palette[:count]) / 255, edgecolor="black", linewidth=0.5)
    for row, value in zip(rows, shares, strict=True):
        axes.text(value, row, f" {value:.2f}", va="center", fontsize=7)
    axes.set_yticks(rows, class_names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, max(1.0, shares.max()) * 1.15)
    axes.set_xlabel("share of the labelled pixels (%)")
    axes.set_title(title or "pixel share per class")
    return figure


def image_pairs_figure(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    captions: Sequence[str],
    class_names: Sequence[str],
    palette: np.ndarray,
    headings: tuple[str, str] = ("raw", "augmented"),
    columns: int = 2,
    title: str = "",
) -> Figure:
    """Pairs of RGB uint8 images side by side (e.g. raw and augmented overlays), `columns` pairs per row,
    with a legend of the class colours."""
    rows = -(-len(pairs) // columns)
    figure = Figure(figsize=(4.2 * columns, 2.3 * rows + 0.9), layout="constrained")
    grid = figure.subplots(rows, 2 * columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for index, ((left, right), caption) in enumerate(zip(pairs, captions, strict=True)):
        row, column = divmod(index, columns)
        for offset, (image, heading) in enumerate(zip((left, right), headings, strict=True)):
            axes = grid[row, 2 * column + offset]
            axes.imshow(image)
            axes.set_title(f"{caption}: {heading}", fontsize=8)
    legend = [
        Patch(facecolor=np.asarray(colour) / 255, edgecolor="black", label=name)
        for name, colour in zip(class_names, palette, strict=False)
    ]
    figure.legend(handles=legend, loc="outside lower center", ncols=min(6, len(legend)), fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def write_evaluation_figures(
    directory: str | Path, stage: str, confusion: np.ndarray, iou: np.ndarray, class_names: Sequence[str]
) -> dict[str, Path]:
    """`<stage>_confusion.png` (row-normalised), `<stage>_confusion.csv` (the pixel counts it is drawn
    from, true class per row) and `<stage>_iou.png` in `directory`; returns them by kind."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    counts = np.asarray(confusion, np.int64)
    table = directory / f"{stage}_confusion.csv"
    with open(table, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true \\ predicted", *class_names])
        writer.writerows([name, *row] for name, row in zip(class_names, counts.tolist(), strict=True))
    title = {"val": "validation", "test": "test"}.get(stage, stage)
    confusion_png = save(
        confusion_figure(counts, class_names, f"{title}: confusion matrix (row-normalised)"),
        directory / f"{stage}_confusion.png",
    )
    iou_png = save(iou_figure(iou, class_names, f"{title}: per-class IoU"), directory / f"{stage}_iou.png")
    return {"confusion": confusion_png, "confusion_counts": table, "iou": iou_png}


def read_confusion_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Class names and the [C, C] pixel counts of a `<stage>_confusion.csv`."""
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    return [row[0] for row in rows[1:]], np.array([[int(v) for v in row[1:]] for row in rows[1:]], np.int64)
