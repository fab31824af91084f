"""Learning curves from runs' `metrics.csv` (`msccl plot`), and paired comparisons of seeds.

One panel per quantity, every run on the same axes (labelled by its run directory): the total loss, each
loss term (CE, auxiliary CE, the contrastive total and its multi-scale / cross-scale terms), the learning
rate, the validation mIoU, and the embedding diagnostics of the contrastive loss (per scale the mean cosine
similarity of same-class and of different-class pairs and their gap; the cross-scale same-class
similarity; see `msccl.contrastive.diagnostics`). A resumed run's earlier `metrics.<k>.csv` are read first.
`plot_learning_curves` also draws groups of runs (e.g. seeds) as their mean with a min-max band, and
`plot_paired_seeds` one value per (arm, seed) with each seed's arms joined, for paired comparisons.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msccl.plots.figures import Figure, save

__all__ = [
    "Curve",
    "Panel",
    "panels_for",
    "plot_learning_curves",
    "plot_paired_seeds",
    "read_metrics",
]

Curve = tuple[np.ndarray, np.ndarray]
"""(steps, values) of one logged key, in step order."""


@dataclass(frozen=True)
class Panel:
    """One set of axes: its title, the keys drawn on it (one line style each, named in the legend by
    `names`, default the key's last part) and a display factor."""

    title: str
    keys: tuple[str, ...]
    scale: float = 1.0
    ylabel: str = ""
    names: tuple[str, ...] = ()

    def name(self, index: int) -> str:
        return self.names[index] if self.names else self.keys[index].rsplit("/", 1)[-1]


def read_metrics(run_dir: str | Path) -> dict[str, Curve]:
    """Every numeric column of a run's metrics CSV files (earlier segments of a resumed run first), as
    (step, value) curves; a one-line error naming the folder when there is no `metrics.csv`."""
    run_dir = Path(run_dir)
    current = run_dir / "metrics.csv"
    if not current.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.csv: give run directories written by `msccl fit`")
    earlier = sorted(run_dir.glob("metrics.*.csv"), key=lambda p: int(p.name.split(".")[1]))
    points: dict[str, dict[int, float]] = {}
    for path in [*earlier, current]:
        with open(path, newline="") as file:
            for row in csv.DictReader(file):
                step = int(float(row["step"]))
                for key, value in row.items():
                    if key in ("step", "epoch") or value in ("", None):
                        continue
                    points.setdefault(key, {})[step] = float(value)  # a later segment wins its steps
    return {
        key: (np.array(sorted(values)), np.array([values[s] for s in sorted(values)]))
        for key, values in points.items()
    }


_LOSS_TERMS = {
    "train/ce": "cross-entropy",
    "train/aux_ce": "auxiliary cross-entropy",
    "train/contrastive": "contrastive loss",
}
_MULTI_SCALE = re.compile(r"train/contrastive/ms/(s\d+)$")
_CROSS_SCALE = re.compile(r"train/contrastive/cs/(s\d+-s\d+)$")
_SAME = re.compile(r"train/contrastive/embedding/(s\d+)/same$")
_CROSS_SAME = re.compile(r"train/contrastive/embedding/(s\d+-s\d+)/same$")


def panels_for(keys: Sequence[str]) -> list[Panel]:
    """The panels of the quantities present among `keys` (the union over the runs), in a fixed order."""
    present = sorted(set(keys))
    panels = [Panel("total loss", ("train/loss",), ylabel="loss")] if "train/loss" in present else []
    panels += [
        Panel(key.removeprefix("train/"), (key,), ylabel=ylabel)
        for key, ylabel in _LOSS_TERMS.items()
        if key in present
    ]
    for title, pattern in (
        ("contrastive: multi-scale terms", _MULTI_SCALE),
        ("contrastive: cross-scale terms", _CROSS_SCALE),
    ):
        found = [(key, match.group(1)) for key in present if (match := pattern.match(key))]
        if found:
            keys, names = tuple(k for k, _ in found), tuple(n for _, n in found)
            panels.append(Panel(title, keys, ylabel="contrastive loss term", names=names))
    panels += [
        Panel("learning rate", (key,), ylabel="learning rate") for key in present if key.startswith("lr-")
    ]
    if "val/mIoU" in present:
        panels.append(Panel("validation mIoU", ("val/mIoU",), 100.0, "mIoU (%)"))
    for key in present:
        if match := _SAME.match(key):
            scale = match.group(1)
            kinds = tuple(
                f"train/contrastive/embedding/{scale}/{kind}" for kind in ("same", "different", "gap")
            )
            panels.append(
                Panel(f"embedding {scale}: mean cosine similarity", kinds, ylabel="same / different class")
            )
    cross = [(key, match.group(1)) for key in present if (match := _CROSS_SAME.match(key))]
    if cross:
        panels.append(
            Panel(
                "cross-scale same-class similarity",
                tuple(k for k, _ in cross),
                ylabel="mean cosine",
                names=tuple(n for _, n in cross),
            )
        )
    return panels


_STYLES = ("-", "--", ":", "-.")


def plot_learning_curves(
    groups: Mapping[str, Sequence[str | Path]],
    output: str | Path,
    panels: Sequence[Panel] | None = None,
    title: str = "",
    columns: int = 3,
    dpi: int = 100,
) -> Path:
    """Draw `groups` (label -> run directories) on shared panels and save the PNG at `output`.

    A group of one run is its curve; a group of several (e.g. seeds) is their mean with the min-max band
    shaded, and its runs must have logged at the same steps. `panels` default to `panels_for` every key.
    """
    metrics = {label: [read_metrics(run) for run in runs] for label, runs in groups.items()}
    if panels is None:
        panels = panels_for([key for runs in metrics.values() for run in runs for key in run])
    if not panels:
        raise ValueError(f"nothing to plot: no known metric in {', '.join(map(str, groups))}")
    rows = math.ceil(len(panels) / columns) if len(panels) > 1 else 1
    columns = min(columns, len(panels))
    figure = Figure(figsize=(5 * columns, 3.4 * rows + 0.6), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    colours = [f"C{i % 10}" for i in range(len(groups))]
    for axes, panel in zip(grid.flat, panels, strict=False):
        for (label, runs), colour in zip(metrics.items(), colours, strict=True):
            for index, (key, style) in enumerate(zip(panel.keys, _STYLES * len(panel.keys), strict=False)):
                curves = [run[key] for run in runs if key in run]
                if not curves:
                    continue
                steps, mean, low, high = _spread(curves, label, key)
                name = label if len(panel.keys) == 1 else f"{label}: {panel.name(index)}"
                axes.plot(
                    steps,
                    panel.scale * mean,
                    style,
                    color=colour,
                    label=name,
                    linewidth=1.2,
                    marker="o" if len(steps) < 30 else None,
                    markersize=3,
                )
                if len(curves) > 1:
                    axes.fill_between(steps, panel.scale * low, panel.scale * high, color=colour, alpha=0.2)
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel("step", fontsize=8)
        axes.set_ylabel(panel.ylabel, fontsize=8)
        axes.grid(alpha=0.3)
        axes.tick_params(labelsize=7)
        if axes.lines:
            axes.legend(fontsize=7)
    for axes in list(grid.flat)[len(panels) :]:
        axes.axis("off")
    if title:
        figure.suptitle(title)
    return save(figure, output, dpi)


def plot_paired_seeds(
    values: Mapping[str, Mapping[int, float]],
    output: str | Path,
    ylabel: str,
    title: str = "",
    dpi: int = 100,
) -> Path:
    """Each arm (label -> seed -> value) a column of dots, one per seed, each seed's dots joined by a line
    across the arms (a paired comparison shows as lines that mostly rise or fall), the arm's mean as a bar."""
    arms = list(values)
    figure = Figure(figsize=(1.6 * len(arms) + 2.4, 3.6), layout="constrained")
    axes = figure.subplots()
    seeds = sorted({seed for per_seed in values.values() for seed in per_seed})
    for index, seed in enumerate(seeds):
        points = [(x, values[arm][seed]) for x, arm in enumerate(arms) if seed in values[arm]]
        xs, ys = zip(*points, strict=True)
        axes.plot(
            xs, ys, "-o", color=f"C{index % 10}", alpha=0.7, markersize=4, linewidth=1, label=f"seed {seed}"
        )
    for x, arm in enumerate(arms):
        mean = float(np.mean(list(values[arm].values())))
        axes.plot([x - 0.25, x + 0.25], [mean, mean], color="black", linewidth=2)
    axes.set_xticks(range(len(arms)), arms, fontsize=8)
    axes.set_xlim(-0.5, len(arms) - 0.5)
    axes.set_ylabel(ylabel, fontsize=8)
    axes.grid(alpha=0.3, axis="y")
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        axes.set_title(title, fontsize=10)
    return save(figure, output, dpi)


def _spread(curves: list[Curve], label: str, key: str) -> tuple[np.ndarray, ...]:
    steps = curves[0][0]
    if any(len(s) != len(steps) or (s != steps).any() for s, _ in curves):
        raise ValueError(f"{label}: its runs logged {key} at different steps, so they cannot be averaged")
    values = np.stack([v for _, v in curves])
    return steps, values.mean(0), values.min(0), values.max(0)
