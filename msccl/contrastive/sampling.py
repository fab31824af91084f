"""Label downsampling and the class-balanced sampler, vectorised over the batch (docs/method.md A2, B1).

The sampler draws, at one scale, exactly V pixel positions from every present (image, class) pair,
uniformly without replacement, and gathers their feature vectors with a single indexing operation, so
the backward writes the feature-map gradient once, not once per pair. The only host-device synchronisation
is one small read, needed because the output size V * T depends on the label counts: one per call of
``sample_class_balanced``, and one for all scales together in ``sample_scales`` (the loss's sampler).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from msccl.contrastive.options import LabelDownsampling, check_option
from msccl.labels import IGNORE_INDEX

__all__ = [
    "ClassBalancedSample",
    "check_labels",
    "downsample_labels",
    "sample_class_balanced",
    "sample_scales",
    "views_per_pair",
]

# Random sort keys: pair id in the high bits, a uniform random integer in the low bits.
_RANDOM_BITS = 40


@dataclass(frozen=True)
class ClassBalancedSample:
    """The samples drawn at one scale.

    Attributes:
        features: [N, C] sampled feature vectors (differentiable w.r.t. the feature map), N = V * T.
        labels: [N] class id of every sample.
        index: [N] flat position of every sample in the feature map, ``b * h * w + y * w + x``.
        views_per_class: V, the number of samples drawn from every present (image, class) pair.
        num_pairs: T, the number of present pairs on this process.
    """

    features: Tensor
    labels: Tensor
    index: Tensor
    views_per_class: int
    num_pairs: int


def _invalid_label_mask(labels: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    return (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))


def _raise_invalid(labels: Tensor, num_classes: int, ignore_index: int) -> None:
    bad = torch.unique(labels[_invalid_label_mask(labels, num_classes, ignore_index)])[:10].tolist()
    raise ValueError(
        f"labels contain values {bad} outside [0, {num_classes}) that are not ignore_index={ignore_index}: "
        "map them to train ids (or to the ignore id) in the dataset, or set num_classes / ignore_index "
        "of the contrastive loss to match the data"
    )


def check_labels(labels: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise ValueError if a label is neither a real class id in [0, num_classes) nor ignore_index."""
    if bool(_invalid_label_mask(labels, num_classes, ignore_index).any()):
        _raise_invalid(labels, num_classes, ignore_index)


def downsample_labels(
    labels: Tensor,
    size: tuple[int, int],
    mode: LabelDownsampling = "nearest",
    *,
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Downsample integer labels [B, H, W] to ``size`` = (h, w).

    ``nearest`` (the paper's, docs/method.md A2.1): PyTorch's legacy nearest neighbour, i.e. the top-left
    pixel of each r x r block when H = r * h. ``majority`` (an option beyond the paper): the most frequent
    value of each r x r block, where ignore counts as a value like any class; ties go to the smallest class
    id and ignore loses every tie. So an all-ignore block stays ignore, and so does a block in which ignore is
    the most frequent value (its feature mostly describes unlabelled pixels, e.g. padding), while a block
    with as many pixels of a class as of ignore takes the class. ``majority`` needs H and W to be
    multiples of h and w.
    """
    check_option("label_downsampling", mode, LabelDownsampling)
    if labels.dim() != 3:
        raise ValueError(f"labels must be [B, H, W], got shape {tuple(labels.shape)}")
    B, H, W = labels.shape
    h, w = size
    if (h, w) == (H, W):
        return labels
    if mode == "nearest":
        # PyTorch `nearest` itself, as the paper (float32 is exact for any label id below 2**24).
        return F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].to(labels.dtype)
    if H % h or W % w:
        raise ValueError(
            f"majority label downsampling needs the label size {H}x{W} to be a multiple of the feature "
            f"size {h}x{w}; use label_downsampling='nearest' or crop sizes divisible by the feature strides"
        )
    if num_classes is None:
        raise ValueError("majority label downsampling needs num_classes")
    ry, rx = H // h, W // w
    # Ignore sorts after every real class so that real classes win ties (first maximum wins below).
    values = torch.where(labels == ignore_index, num_classes, labels)
    blocks = values.view(B, h, ry, w, rx).permute(0, 1, 3, 2, 4).reshape(-1, ry * rx)
    blocks = blocks.sort(dim=1).values
    # Run-length encode every sorted block; the longest run is the mode.
    new_run = torch.ones_like(blocks, dtype=torch.bool)
    new_run[:, 1:] = blocks[:, 1:] != blocks[:, :-1]
    run_id = new_run.cumsum(dim=1) - 1
    run_length = torch.zeros_like(blocks).scatter_add_(1, run_id, torch.ones_like(blocks))
    run_value = torch.zeros_like(blocks).scatter_(1, run_id, blocks)
    mode_value = run_value.gather(1, run_length.argmax(dim=1, keepdim=True)).view(B, h, w)
    return torch.where(mode_value == num_classes, ignore_index, mode_value).to(labels.dtype)


def views_per_pair(
    num_pairs: int, min_count: int, max_views_per_class: int = 2500, max_features_total: int = 10000
) -> int:
    """V = min count over present pairs, capped at max_views_per_class; V*T <= the total.

    The budget rule of docs/method.md A2.4. Returns 0 when there is no present pair (or more pairs than
    max_features_total).
    """
    if num_pairs == 0:
        return 0
    views = min(min_count, max_views_per_class)
    if views * num_pairs > max_features_total:
        views = max_features_total // num_pairs
    return views


def sample_class_balanced(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    ignore_index: int = IGNORE_INDEX,
    min_views_per_class: int = 5,
    max_views_per_class: int = 2500,
    max_features_total: int = 10000,
    generator: torch.Generator | None = None,
    pair_stats_reducer: Callable[[Tensor], Tensor] | None = None,
) -> ClassBalancedSample:
    """Draw V samples from every present (image, class) pair of one scale (docs/method.md A2.2-A2.5).

    Args:
        features: [B, C, h, w] projected feature map of this scale.
        labels: [B, h, w] labels already at the feature resolution (see ``downsample_labels``).
        num_classes: real classes are 0..num_classes-1, all of them sampled.
        ignore_index: never sampled; any other value outside [0, num_classes) raises ValueError.
        generator: optional ``torch.Generator`` on the features' device, for reproducible draws.
        pair_stats_reducer: maps the local ``[T, min_count]`` (int64) to the global one; used by the
            ``global`` DDP budget so that V follows the rule over the pairs of all ranks.

    Samples come out grouped by pair, in increasing order of ``b * num_classes + c``.
    """
    return sample_scales(
        [features],
        [labels],
        num_classes,
        ignore_index=ignore_index,
        min_views_per_class=min_views_per_class,
        max_views_per_class=max_views_per_class,
        max_features_total=max_features_total,
        generator=generator,
        pair_stats_reducer=pair_stats_reducer,
    )[0]


def sample_scales(
    features: list[Tensor],
    labels: list[Tensor],
    num_classes: int,
    *,
    ignore_index: int = IGNORE_INDEX,
    min_views_per_class: int = 5,
    max_views_per_class: int = 2500,
    max_features_total: int = 10000,
    generator: torch.Generator | None = None,
    pair_stats_reducer: Callable[[Tensor], Tensor] | None = None,
    checked_labels: Tensor | None = None,
) -> list[ClassBalancedSample]:
    """``sample_class_balanced`` of every scale (``features[s]`` with ``labels[s]``), reading the counts of
    all scales from the device in one synchronisation instead of one per scale.

    ``checked_labels`` (e.g. the full-resolution labels the scales were downsampled from) are checked by
    ``check_labels`` within that same read. Scales draw from ``generator`` in order.
    """
    if checked_labels is None and not features:
        return []
    counted = [
        _count_pairs(x, y, num_classes, ignore_index, min_views_per_class)
        for x, y in zip(features, labels, strict=True)
    ]
    reduced = [stats if pair_stats_reducer is None else pair_stats_reducer(stats) for *_, stats, _ in counted]
    device = features[0].device if features else checked_labels.device
    checked_invalid = torch.zeros(1, dtype=torch.long, device=device)
    if checked_labels is not None:
        checked_invalid += _invalid_label_mask(checked_labels, num_classes, ignore_index).sum().to(device)
    # The one host synchronisation: V of every scale fixes the output shapes.
    host = torch.cat(
        [checked_invalid]
        + [torch.cat([c[-2], r, c[-1].view(1)]) for c, r in zip(counted, reduced, strict=True)]
    ).tolist()
    if host[0]:
        _raise_invalid(checked_labels, num_classes, ignore_index)
    samples = []
    for s, (x, (flat, pair, counts, present, _, _)) in enumerate(zip(features, counted, strict=True)):
        local_pairs, _, num_pairs, min_count, num_invalid = host[1 + 5 * s : 6 + 5 * s]
        if num_invalid:
            _raise_invalid(flat, num_classes, ignore_index)
        views = views_per_pair(num_pairs, min_count, max_views_per_class, max_features_total)
        samples.append(_draw(x, flat, pair, counts, present, views, local_pairs, num_classes, generator))
    return samples


def _count_pairs(
    features: Tensor, labels: Tensor, num_classes: int, ignore_index: int, min_views_per_class: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(flat labels, pair id per pixel, n_bc per pair, present mask, [T, min count], invalid count) of one
    scale, all on the device."""
    if features.dim() != 4:
        raise ValueError(f"features must be [B, C, h, w], got shape {tuple(features.shape)}")
    B, C, h, w = features.shape
    if tuple(labels.shape) != (B, h, w):
        raise ValueError(f"labels {tuple(labels.shape)} do not match the feature map {(B, h, w)}")
    device = features.device
    num_pairs_total = B * num_classes
    flat = labels.reshape(-1).long()
    image = torch.arange(B, device=device).repeat_interleave(h * w)
    invalid = _invalid_label_mask(flat, num_classes, ignore_index)
    usable = (flat != ignore_index) & ~invalid
    # Pixel count n_bc of every (image, class) pair, ignore in an extra last bucket.
    pair = torch.where(usable, image * num_classes + flat, num_pairs_total)
    counts = torch.bincount(pair, minlength=num_pairs_total + 1)[:num_pairs_total]
    # A pair is present when it has at least min_views_per_class pixels.
    present = counts >= min_views_per_class
    big = torch.iinfo(torch.int64).max
    min_count = torch.where(present, counts, big).amin() if num_pairs_total else counts.new_tensor(big)
    return flat, pair, counts, present, torch.stack([present.sum(), min_count]), invalid.sum()


def _draw(
    features: Tensor,
    flat: Tensor,
    pair: Tensor,
    counts: Tensor,
    present: Tensor,
    views: int,
    local_pairs: int,
    num_classes: int,
    generator: torch.Generator | None,
) -> ClassBalancedSample:
    """The V samples of every present pair of one scale, given the counts read from the device."""
    device = features.device
    B, C, h, w = features.shape
    if views == 0 or local_pairs == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return ClassBalancedSample(features.flatten(2)[empty, :, empty], empty, empty, views, local_pairs)

    # Uniform draw without replacement inside every pair, for all pairs at once: sort the
    # pixels by (pair id, random key); the first V pixels of each pair's run are a uniform V-subset.
    noise = torch.randint(0, 1 << _RANDOM_BITS, flat.shape, device=device, generator=generator)
    order = torch.argsort((pair << _RANDOM_BITS) | noise)
    run_start = torch.cumsum(counts, 0) - counts
    # Ids of the present pairs in increasing order, without a data-dependent shape (no extra sync).
    present_ids = torch.argsort((~present).to(torch.uint8), stable=True)[:local_pairs]
    take = (run_start[present_ids, None] + torch.arange(views, device=device)).reshape(-1)
    index = order[take]
    sample_labels = (present_ids % num_classes).repeat_interleave(views)
    # One gather for the whole scale, straight from the [B, C, h*w] view (no permuted copy), so the
    # backward writes the feature-map gradient once instead of a dense zero gradient per pair.
    sampled = features.flatten(2)[index // (h * w), :, index % (h * w)]
    return ClassBalancedSample(sampled, sample_labels, index, views, local_pairs)
