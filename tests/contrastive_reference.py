"""A slow, obviously correct reference of docs/method.md A3/A4, written straight from the formulas.

Python loops over anchors and positives, float64, no stabilisation tricks: only for tiny inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reference_infonce(
    anchors: Tensor,
    anchor_labels: Tensor,
    contrast: Tensor | None,
    contrast_labels: Tensor | None,
    temperature: float,
) -> Tensor:
    """Mean over anchors of -(1/|P(i)|) sum_p [l_ip - log(exp(l_ip) + sum_{n in Neg(i)} exp(l_in))]."""
    same = contrast is None
    za = F.normalize(anchors.double(), dim=1)
    zc = za if same else F.normalize(contrast.double(), dim=1)
    ya = anchor_labels.tolist()
    yc = ya if same else contrast_labels.tolist()
    total = za.new_zeros(())
    for i in range(len(ya)):
        positives = [j for j in range(len(yc)) if yc[j] == ya[i] and not (same and j == i)]
        negatives = [j for j in range(len(yc)) if yc[j] != ya[i]]
        if not positives:
            continue  # no positive: contributes 0, still counted in the mean below
        neg_sum = torch.exp(zc[negatives] @ za[i] / temperature).sum()
        anchor_loss = za.new_zeros(())
        for p in positives:
            logit = torch.dot(za[i], zc[p]) / temperature
            anchor_loss = anchor_loss - (logit - torch.log(torch.exp(logit) + neg_sum))
        total = total + anchor_loss / len(positives)
    return total / max(len(ya), 1)


def reference_total(
    vectors: list[tuple[Tensor, Tensor] | None],
    scale_weights: list[float],
    pairs: list[tuple[int, int, float]],
    temperature: float,
    cross_scale_temperature: float,
    multi_scale: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """sum_s w_s L_ms(s) + sum over pairs w L_cs(a, c), from per-scale (samples, labels)."""
    terms: dict[str, Tensor] = {}
    total = torch.zeros((), dtype=torch.float64)
    if multi_scale:
        for s, item in enumerate(vectors):
            if item is None:
                continue
            terms[f"ms/s{s}"] = reference_infonce(item[0], item[1], None, None, temperature)
            total = total + scale_weights[s] * terms[f"ms/s{s}"]
    for a, c, weight in pairs:
        (za, ya), (zc, yc) = vectors[a], vectors[c]
        terms[f"cs/s{a}-s{c}"] = reference_infonce(za, ya, zc, yc, cross_scale_temperature)
        total = total + weight * terms[f"cs/s{a}-s{c}"]
    return total, terms


# A regime where sampling is deterministic.
X = 255  # the ignore id
# Two images of 4x4 cells in which every present (image, class) pair covers exactly 6 cells, so that at
# every scale whose cells are whole pixels all present pairs have the same count: V is that count and
# the sampler takes every pixel, so the loss does not depend on the random draw.
EQUAL_CELLS = [
    [[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1], [X, X, X, X]],
    [[2, 2, X, X], [2, 2, 1, 1], [2, 2, 1, 1], [X, X, 1, 1]],
]


def cell_labels(cells: list, cell_px: int = 4) -> torch.Tensor:
    """Labels [B, 4 * cell_px, 4 * cell_px] from per-image 4x4 grids of class ids."""
    grid = torch.tensor(cells)
    return grid.repeat_interleave(cell_px, dim=1).repeat_interleave(cell_px, dim=2)
