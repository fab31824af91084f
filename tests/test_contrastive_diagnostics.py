"""Embedding diagnostics (msccl.contrastive.diagnostics) against the pairwise computation they shortcut."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from contrastive_reference import EQUAL_CELLS, cell_labels

from msccl.contrastive import MSCSContrastiveLoss
from msccl.contrastive.diagnostics import embedding_diagnostics


def pairwise_means(za, ya, zc=None, yc=None) -> tuple[float, float]:
    """Mean cosine similarity of same-class and of different-class pairs, from the full matrix."""
    cross = zc is not None
    zc, yc = (za, ya) if zc is None else (zc, yc)
    similarity = F.normalize(za, dim=1) @ F.normalize(zc, dim=1).T
    same = ya[:, None] == yc[None, :]
    if not cross:
        same = same & ~torch.eye(len(ya), dtype=torch.bool)  # a sample with itself is no pair
    return similarity[same].mean().item(), similarity[ya[:, None] != yc[None, :]].mean().item()


def test_diagnostics_equal_the_pairwise_means():
    g = torch.Generator().manual_seed(0)
    za, ya = torch.randn(40, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (40,), generator=g)
    zc, yc = torch.randn(25, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (25,), generator=g)
    zc[yc == 1] += 2.0  # one tight class, so the values are not all near 0
    out = embedding_diagnostics({0: (za, ya), 2: (zc, yc)}, [(0, 2)])
    for s, (z, y) in {0: (za, ya), 2: (zc, yc)}.items():
        same, different = pairwise_means(z, y)
        assert math.isclose(out[f"embedding/s{s}/same"].item(), same, rel_tol=1e-9)
        assert math.isclose(out[f"embedding/s{s}/different"].item(), different, rel_tol=1e-9)
        assert math.isclose(out[f"embedding/s{s}/gap"].item(), same - different, rel_tol=1e-9)
    same, _ = pairwise_means(za, ya, zc, yc)
    assert math.isclose(out["embedding/s0-s2/same"].item(), same, rel_tol=1e-9)


def test_values_without_pairs_are_nan():
    z, y = torch.randn(3, 4), torch.tensor([0, 1, 2])  # one sample per class: no same-class pair
    out = embedding_diagnostics({0: (z, y)})
    assert out["embedding/s0/same"].isnan() and not out["embedding/s0/different"].isnan()


def test_the_loss_reports_the_diagnostics_of_its_own_samples():
    labels = cell_labels(EQUAL_CELLS)
    g = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 6, s, s, generator=g, dtype=torch.float64) for s in (8, 4, 4)]
    loss_fn = MSCSContrastiveLoss(num_classes=3, max_views_per_class=6)
    samples = loss_fn.draw_samples(features, labels, generator=torch.Generator().manual_seed(2))
    _, terms = loss_fn.loss_from_samples(samples)
    for s, sample in enumerate(samples):
        same, different = pairwise_means(sample.features, sample.labels)
        assert math.isclose(terms[f"embedding/s{s}/same"].item(), same, rel_tol=1e-9)
        assert math.isclose(terms[f"embedding/s{s}/different"].item(), different, rel_tol=1e-9)
    for a, c in ((0, 2), (0, 1)):  # the paper's pairs for 3 scales
        same, _ = pairwise_means(
            samples[a].features, samples[a].labels, samples[c].features, samples[c].labels
        )
        assert math.isclose(terms[f"embedding/s{a}-s{c}/same"].item(), same, rel_tol=1e-9)
