"""MSCSContrastiveLoss: the multi-scale and cross-scale contrastive loss of docs/method.md A4.

    L_contrast = sum_s w_s L_ms(s) + w_hl L_cs(0, S-1) + w_hm L_cs(0, S-2)

The training module multiplies it by its own weight (0.1 in the paper); this module does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from msccl.contrastive.base import SegmentationContrastiveLoss
from msccl.contrastive.diagnostics import embedding_diagnostics
from msccl.contrastive.distributed import gather_samples, reduce_pair_stats, world_size
from msccl.contrastive.infonce import infonce
from msccl.contrastive.options import Budget, Kernel, LabelDownsampling, MatmulPrecisionOrAuto, check_option
from msccl.contrastive.sampling import ClassBalancedSample, downsample_labels, sample_scales
from msccl.labels import IGNORE_INDEX

__all__ = ["PAPER_SCALE_WEIGHTS", "MSCSContrastiveLoss"]

# The paper's multi-scale weights w_s for 4 scales, highest resolution first.
PAPER_SCALE_WEIGHTS = (1.0, 0.7, 0.4, 0.1)


class MSCSContrastiveLoss(SegmentationContrastiveLoss):
    """Multi-scale + cross-scale supervised contrastive loss (Pissas et al., ECCV 2022; docs/method.md A, B).

    Args:
        num_classes: real classes are 0..num_classes-1; every one of them is sampled (the official
            code never samples the last one, which is a real class on datasets without an ignore entry).
        ignore_index: the only label id never sampled. Other ids outside the classes raise.
        temperature: tau of the multi-scale terms.
        cross_scale_temperature: tau of the cross-scale terms; None uses ``temperature``. A value given
            is used (the official code ignores it).
        scale_weights: w_s of the multi-scale terms, one per scale. None: the paper's
            [1.0, 0.7, 0.4, 0.1] for 4 scales and its first S entries for S < 4 (e.g. [1.0, 0.7, 0.4]
            for 3 scales); more than 4 scales need an explicit list.
        cross_scale_weights: one weight per entry of ``cross_scale_pairs``; with the default pairs these
            are w_hl and w_hm.
        cross_scale_pairs: (anchor scale, contrast scale) pairs of the cross-scale terms; negative
            indices count from the lowest resolution. The default ((0, -1), (0, -2)) is the paper's
            (0, S-1) and (0, S-2); a pair whose two scales coincide (e.g. (0, -2) when S = 2) is skipped,
            which gives exactly the paper's terms ((0, S-2) only when S > 2). More pairs go beyond the paper.
        multi_scale: include the multi-scale terms.
        cross_scale: include the cross-scale terms.
        min_views_per_class: a pair (image, class) is present with at least this many pixels.
        max_views_per_class: cap on the views per pair V.
        max_features_total: cap on V * T, the samples per scale.
        label_downsampling: ``nearest`` (top-left pixel, the paper's) or ``majority`` (an option beyond
            the paper; see ``downsample_labels`` for the rule).
        detach_low_res: stop the cross-scale gradient into the contrast (lower-resolution) side.
        budget: ``per_device`` (the paper: each process samples and contrasts its own batch) or
            ``global`` (V from the pairs of all ranks, samples all-gathered, so the budget means the same on
            any number of GPUs; see ``distributed``).
        block_size: anchor rows per block of logits; bounds memory at block_size x N floats.
        matmul_precision: inputs of the products of normalised vectors: ``highest`` (float32),
            ``tf32``, ``bf16``, or ``auto``: ``bf16`` when the sampled features arrive in bfloat16 (the
            network ran under bf16 autocast, so bf16 is their own precision), ``highest`` otherwise.
            Sums, exp and log stay float32; see ``infonce``, and docs/contrastive-loss.md for the measured
            error.
        kernel: ``auto`` (blockwise, or the fused Triton kernels on CUDA for a precision whose kernels
            passed the GPU check: ``VERIFIED_TRITON``, none yet), ``blockwise`` or ``triton`` (see
            ``infonce``; a failing Triton kernel warns once and the loss continues blockwise).

    ``forward(features, labels, generator=None)`` returns ``(loss, terms)``. ``terms`` holds detached
    tensors for logging: ``ms/s{s}`` the multi-scale term of scale s, ``cs/s{a}-s{c}`` the cross-scale
    term with anchors from scale a and contrast from scale c, ``samples/s{s}`` the number of sampled
    anchors at scale s (over all ranks with the global budget), and the embedding diagnostics of
    ``msccl.contrastive.diagnostics`` computed from the same samples (``embedding/s{s}/same`` ...).
    Scale 0 is the highest resolution.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        temperature: float = 0.1,
        cross_scale_temperature: float | None = None,
        scale_weights: Sequence[float] | None = None,
        cross_scale_weights: Sequence[float] = (1.0, 1.0),
        cross_scale_pairs: Sequence[tuple[int, int]] = ((0, -1), (0, -2)),
        multi_scale: bool = True,
        cross_scale: bool = True,
        min_views_per_class: int = 5,
        max_views_per_class: int = 2500,
        max_features_total: int = 10000,
        label_downsampling: LabelDownsampling = "nearest",
        detach_low_res: bool = False,
        budget: Budget = "per_device",
        block_size: int = 512,
        matmul_precision: MatmulPrecisionOrAuto = "auto",
        kernel: Kernel = "auto",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if temperature <= 0 or (cross_scale_temperature is not None and cross_scale_temperature <= 0):
            raise ValueError("temperature and cross_scale_temperature must be positive")
        if not (multi_scale or cross_scale):
            raise ValueError("enable multi_scale, cross_scale or both")
        if len(cross_scale_weights) != len(cross_scale_pairs):
            raise ValueError(
                f"cross_scale_weights has {len(cross_scale_weights)} entries for "
                f"{len(cross_scale_pairs)} cross_scale_pairs: give one weight per pair"
            )
        if min(min_views_per_class, max_views_per_class, max_features_total, block_size) < 1:
            raise ValueError("min/max views, max_features_total and block_size must be at least 1")
        check_option("label_downsampling", label_downsampling, LabelDownsampling)
        check_option("budget", budget, Budget)
        check_option("matmul_precision", matmul_precision, MatmulPrecisionOrAuto)
        check_option("kernel", kernel, Kernel)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.temperature = temperature
        # Honoured: the official code reads temperature instead when cross_scale_temperature is given.
        self.cross_scale_temperature = (
            temperature if cross_scale_temperature is None else cross_scale_temperature
        )
        self.scale_weights = None if scale_weights is None else [float(w) for w in scale_weights]
        self.cross_scale_weights = [float(w) for w in cross_scale_weights]
        self.cross_scale_pairs = [(int(a), int(c)) for a, c in cross_scale_pairs]
        self.multi_scale = multi_scale
        self.cross_scale = cross_scale
        self.min_views_per_class = min_views_per_class
        self.max_views_per_class = max_views_per_class
        self.max_features_total = max_features_total
        self.label_downsampling = label_downsampling
        self.detach_low_res = detach_low_res
        self.budget = budget
        self.block_size = block_size
        self.matmul_precision = matmul_precision
        self.kernel = kernel

    def forward(
        self, features: Sequence[Tensor], labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and per-term log values for projected maps [B, C, h_s, w_s] and train-id labels [B, H, W].

        ``features`` is ordered highest resolution first. ``generator`` (on the features' device) makes
        the sampling reproducible; scales draw from it in order 0..S-1.
        """
        return self.loss_from_samples(self.draw_samples(features, labels, generator=generator))

    def validate_setup(self, num_taps: int, projection_dim: int) -> None:
        if self.multi_scale:
            self.scale_weights_for(num_taps)

    def scale_weights_for(self, num_scales: int) -> list[float]:
        """w_s for ``num_scales`` scales; see the class docstring for the rule when None."""
        if self.scale_weights is not None:
            if len(self.scale_weights) != num_scales:
                raise ValueError(
                    f"scale_weights has {len(self.scale_weights)} entries but the model gives {num_scales} "
                    "scales: give one weight per tapped scale"
                )
            return self.scale_weights
        if num_scales > len(PAPER_SCALE_WEIGHTS):
            raise ValueError(
                f"{num_scales} scales but no scale_weights: the paper's weights cover at most "
                f"{len(PAPER_SCALE_WEIGHTS)} scales, so give scale_weights explicitly"
            )
        return list(PAPER_SCALE_WEIGHTS[:num_scales])

    def cross_scale_pairs_for(self, num_scales: int) -> list[tuple[int, int, float]]:
        """(anchor scale, contrast scale, weight) of every cross-scale term for ``num_scales`` scales."""
        if not self.cross_scale or num_scales < 2:
            return []  # a single scale has nothing to contrast across
        resolved: list[tuple[int, int, float]] = []
        for (a, c), weight in zip(self.cross_scale_pairs, self.cross_scale_weights, strict=True):
            if not (-num_scales <= a < num_scales and -num_scales <= c < num_scales):
                raise ValueError(f"cross-scale pair {(a, c)} is out of range for {num_scales} scales")
            a, c = a % num_scales, c % num_scales
            if a == c:
                continue  # e.g. (0, S-2) when S = 2: the paper has no term of a scale against itself
            if any((a, c) == (ra, rc) for ra, rc, _ in resolved):
                raise ValueError(f"cross-scale pair {(a, c)} is listed twice for {num_scales} scales")
            resolved.append((a, c, weight))
        return resolved

    def draw_samples(
        self, features: Sequence[Tensor], labels: Tensor, generator: torch.Generator | None = None
    ) -> list[ClassBalancedSample | None]:
        """Class-balanced samples of every scale used by a term; None for unused scales."""
        num_scales = len(features)
        if num_scales == 0:
            raise ValueError("MSCSContrastiveLoss needs at least one feature map")
        if labels.dim() != 3:
            raise ValueError(f"labels must be [B, H, W] train ids, got shape {tuple(labels.shape)}")
        for s, x in enumerate(features):
            if x.dim() != 4 or x.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"feature map {s} has shape {tuple(x.shape)}; expected [B, C, h, w] with B = "
                    f"{labels.shape[0]} like the labels"
                )
        used = set(range(num_scales)) if self.multi_scale else set()
        for a, c, _ in self.cross_scale_pairs_for(num_scales):
            used |= {a, c}
        reducer = reduce_pair_stats if self.budget == "global" and world_size() > 1 else None
        scales = sorted(used)
        scale_labels = [
            downsample_labels(
                labels,
                (features[s].shape[-2], features[s].shape[-1]),
                self.label_downsampling,
                num_classes=self.num_classes,
                ignore_index=self.ignore_index,
            )
            for s in scales
        ]
        # One host synchronisation for every scale and the label check, not one per scale per step.
        drawn = sample_scales(
            [features[s] for s in scales],
            scale_labels,
            self.num_classes,
            ignore_index=self.ignore_index,
            min_views_per_class=self.min_views_per_class,
            max_views_per_class=self.max_views_per_class,
            max_features_total=self.max_features_total,
            generator=generator,
            pair_stats_reducer=reducer,
            checked_labels=labels,
        )
        by_scale = dict(zip(scales, drawn, strict=True))
        return [by_scale.get(s) for s in range(num_scales)]

    def loss_from_samples(
        self, samples: Sequence[ClassBalancedSample | None]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted multi-scale and cross-scale terms from the samples of ``draw_samples``.

        The same samples serve both kinds of term, as in the paper.
        """
        num_scales = len(samples)
        # without multi-scale terms the weights are unused, so a list for other taps is no error
        scale_weights = self.scale_weights_for(num_scales) if self.multi_scale else []
        pairs = self.cross_scale_pairs_for(num_scales)
        gather = self.budget == "global" and world_size() > 1
        vectors: dict[int, tuple[Tensor, Tensor]] = {}
        terms: dict[str, Tensor] = {}
        precision = self.matmul_precision
        if precision == "auto":
            arrived = {sample.features.dtype for sample in samples if sample is not None}
            precision = "bf16" if arrived == {torch.bfloat16} else "highest"
        settings = {"block_size": self.block_size, "matmul_precision": precision, "kernel": self.kernel}
        for s, sample in enumerate(samples):
            if sample is None:
                continue
            # float32 from here on, whatever the autocast state, so that sums of e^(1/tau) terms cannot
            # overflow (float64 stays float64, for exact tests).
            z = sample.features if sample.features.dtype == torch.float64 else sample.features.float()
            y = sample.labels
            if gather:
                z, y = gather_samples(z, y)
            vectors[s] = (z, y)
            terms[f"samples/s{s}"] = torch.tensor(float(z.shape[0]), device=z.device)

        weighted: list[Tensor] = []
        if self.multi_scale:
            for s, (z, y) in vectors.items():
                term = infonce(z, y, temperature=self.temperature, **settings)
                terms[f"ms/s{s}"] = term.detach()
                weighted.append(scale_weights[s] * term)
        for a, c, weight in pairs:
            (za, ya), (zc, yc) = vectors[a], vectors[c]
            if self.detach_low_res:
                zc = zc.detach()
            # Anchors from scale a (0 in the paper), contrast set from the lower-resolution scale c.
            term = infonce(za, ya, zc, yc, temperature=self.cross_scale_temperature, **settings)
            terms[f"cs/s{a}-s{c}"] = term.detach()
            weighted.append(weight * term)
        if not weighted:
            raise ValueError(
                f"no contrastive term for {num_scales} scale(s): with multi_scale=False the cross-scale "
                "pairs must name two different scales"
            )
        loss = torch.stack(weighted).sum()
        pair_scales = [(a, c) for a, c, _ in pairs]
        terms.update(embedding_diagnostics(vectors, pair_scales, num_classes=self.num_classes))
        return loss, terms
