"""Embedding diagnostics from the samples the contrastive loss already draws (no extra forward).

For the L2-normalised samples z of one scale, with n_c samples of class c and S_c = sum of their vectors:

    same      = mean of z_i . z_j over pairs i != j of the same class
              = sum_c (|S_c|^2 - n_c) / sum_c n_c (n_c - 1)
    different = mean of z_i . z_j over pairs of different classes
              = (|sum_c S_c|^2 - sum_c |S_c|^2) / (N^2 - sum_c n_c^2)
    gap       = same - different

and across scales a (anchors) and c (contrast), the mean similarity of same-class pairs
sum_c S^a_c . S^c_c / sum_c n^a_c n^c_c. The class sums make this O(N D), where the pairwise matrix
would be O(N^2) (10000 samples: 400 MB). A trained embedding has `same` near 1 and `different` near 0
or below (the loss pulls same-class pairs together and pushes the others apart).
A value without pairs to average (a single class, or a class with one sample) is NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["embedding_diagnostics"]


@torch.no_grad()
def embedding_diagnostics(
    vectors: Mapping[int, tuple[Tensor, Tensor]],
    cross_scale_pairs: Iterable[tuple[int, int]] = (),
    num_classes: int | None = None,
) -> dict[str, Tensor]:
    """`embedding/s{s}/same|different|gap` per scale and `embedding/s{a}-s{c}/same` per cross-scale pair.

    `vectors` maps scale -> (samples [N, D], class ids [N]), as the loss holds them (not yet normalised).
    With `num_classes` (ids below it) nothing is read from the device: the values stay tensors there, so
    computing them every training step costs no host synchronisation (without it, one per scale).
    """
    sums: dict[int, tuple[Tensor, Tensor]] = {}
    out: dict[str, Tensor] = {}
    for s, (z, y) in vectors.items():
        class_sums, counts = _class_sums(z, y, num_classes)
        sums[s] = (class_sums, counts)
        squared = (class_sums * class_sums).sum(1)
        total = class_sums.sum(0)
        same = _mean((squared - counts).sum(), (counts * (counts - 1)).sum())
        different = _mean((total * total).sum() - squared.sum(), counts.sum() ** 2 - (counts * counts).sum())
        out[f"embedding/s{s}/same"] = same
        out[f"embedding/s{s}/different"] = different
        out[f"embedding/s{s}/gap"] = same - different
    for a, c in cross_scale_pairs:
        (sums_a, counts_a), (sums_c, counts_c) = sums[a], sums[c]
        k = min(len(counts_a), len(counts_c))  # classes beyond either scale's largest id have no pairs
        out[f"embedding/s{a}-s{c}/same"] = _mean(
            (sums_a[:k] * sums_c[:k]).sum(), (counts_a[:k] * counts_c[:k]).sum()
        )
    return out


def _mean(total: Tensor, pairs: Tensor) -> Tensor:
    """`total / pairs`, NaN without pairs (not the rounding error of `total` over 0)."""
    return torch.where(pairs > 0, total / pairs.clamp(min=1), torch.nan)


def _class_sums(z: Tensor, y: Tensor, num_classes: int | None) -> tuple[Tensor, Tensor]:
    """Sum of the normalised vectors of each class id [K, D] and their counts [K] (K = num_classes, else
    max id + 1, which is read from the device)."""
    z = F.normalize(z if z.dtype == torch.float64 else z.float(), dim=1)
    classes = num_classes if num_classes is not None else int(y.max()) + 1 if y.numel() else 1
    one_hot = F.one_hot(y, classes).to(z.dtype)  # [N, K]: one matrix product, fast on every device
    return one_hot.T @ z, one_hot.sum(0)
