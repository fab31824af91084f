"""Pixel contrast of Wang et al., ICCV 2021 (ContrastiveSeg), vectorised: the baseline MS + CS is compared to.

docs/method.md P ("Pixel contrast (ContrastiveSeg)") lists what the original does, point by point, and
every difference with the setting that switches it. In short: one projection of the decoder feature,
L2-normalised; labels and predictions nearest-downsampled to its size; per image, every class with more
than ``max_views`` labelled pixels is an anchor class, whose V = min(max_samples // T, max_views) views
are half hard (labelled c, predicted otherwise) and half easy where available; the supervised
contrastive loss over those views, scaled by temperature / base_temperature, or against the memory banks
when ``memory_size`` > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from msccl.contrastive.base import SegmentationContrastiveLoss
from msccl.contrastive.distributed import gather_samples, world_size
from msccl.contrastive.memory import (
    PixelPointerAdvance,
    PixelQueuePool,
    PixelSegmentMemory,
    ranks_within_groups,
)
from msccl.contrastive.options import check_option
from msccl.contrastive.sampling import check_labels
from msccl.labels import IGNORE_INDEX

__all__ = ["HardAnchorSample", "PixelContrastLoss", "pixel_contrast_loss", "sample_hard_anchors"]


@dataclass(frozen=True)
class HardAnchorSample:
    """The anchors of one batch, as ``sample_hard_anchors`` draws them.

    Attributes:
        index: [T, V] flat position ``b * h * w + p`` of every view; each row lists its hard views first
            (in increasing order of their random draw), then its easy views.
        labels: [T] the class of every anchor row, in (image, class) order.
        hard_views: [T] how many of the row's views are hard.
    """

    index: Tensor
    labels: Tensor
    hard_views: Tensor


def sample_hard_anchors(
    labels: Tensor,
    predictions: Tensor,
    num_classes: int,
    ignore_index: int,
    max_samples: int,
    max_views: int,
    draws: Tensor,
) -> HardAnchorSample | None:
    """Segmentation-aware hard anchor sampling of flat labels and predictions [B, P] (docs/method.md P3, P4).

    ``draws`` [B, P] holds one uniform number per pixel; inside each (image, class, hard|easy) pool the
    pixels with the smallest draws are kept, which is a uniform draw without replacement like the
    original's ``randperm``. None when no (image, class) has more than ``max_views`` pixels, or when the
    anchor classes outnumber ``max_samples`` (V would be 0).
    """
    batch, pixels = labels.shape
    valid = labels != ignore_index
    image = torch.arange(batch, device=labels.device).unsqueeze(1)
    pair = torch.where(valid, image * num_classes + labels, -1).flatten()
    counts = torch.bincount(pair[pair >= 0], minlength=batch * num_classes)
    pairs = torch.nonzero(counts > max_views).squeeze(1)  # (image, class) order, as the original's loops
    total = pairs.numel()
    if total == 0 or max_samples // total == 0:
        return None
    views = min(max_samples // total, max_views)
    anchor_of_pair = torch.full((batch * num_classes,), -1, dtype=torch.long, device=labels.device)
    anchor_of_pair[pairs] = torch.arange(total, device=labels.device)
    anchor = torch.where(pair >= 0, anchor_of_pair[pair.clamp(min=0)], -1)
    candidates = torch.nonzero(anchor >= 0).squeeze(1)
    anchor = anchor[candidates]
    hard = predictions.flatten()[candidates] != labels.flatten()[candidates]
    num_hard = torch.bincount(anchor[hard], minlength=total)
    num_easy = counts[pairs] - num_hard
    # V // 2 hard when both pools hold V / 2; else all of the short pool, the rest from the other
    hard_keep = torch.where(
        (2 * num_hard >= views) & (2 * num_easy >= views),
        views // 2,
        torch.where(2 * num_hard >= views, views - num_easy, num_hard),
    )
    easy_keep = views - hard_keep
    rank = ranks_within_groups(2 * anchor + (~hard).long(), draws.flatten()[candidates])
    kept = rank < torch.where(hard, hard_keep[anchor], easy_keep[anchor])
    slot = torch.where(hard, rank, hard_keep[anchor] + rank)
    index = torch.empty((total, views), dtype=torch.long, device=labels.device)
    index[anchor[kept], slot[kept]] = candidates[kept]
    return HardAnchorSample(index, pairs % num_classes, hard_keep)


def pixel_contrast_loss(
    anchors: Tensor,
    anchor_labels: Tensor,
    temperature: float,
    base_temperature: float,
    contrast: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    mask_queue_diagonal: bool = True,
) -> Tensor:
    """-(tau / tau_base) x mean over anchor views of the mean over positives p of
    [l_ip - log(exp(l_ip) + sum over negatives n of exp(l_in))], l = z_i . z_j / tau (docs/method.md P5, P8).

    ``anchors`` [T, V, D] normalised views, ``anchor_labels`` [T]. Without a contrast set the views
    contrast with each other (every view but itself is a candidate positive); with one (the memory), the
    original also drops column i from the positives of view row i (``mask_queue_diagonal``). Rows are
    view-major (row v * T + t), as the original orders them. A row without positives is left out of the
    mean (the original divides 0 by 0 there).
    """
    num_anchors, views, dim = anchors.shape
    z = anchors.transpose(0, 1).reshape(views * num_anchors, dim)
    y = anchor_labels.repeat(views)
    own = contrast is None
    c, yc = (z, y) if own else (contrast.to(z.dtype), contrast_labels)
    logits = z @ c.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    same = y.unsqueeze(1) == yc.unsqueeze(0)
    positive = same.clone()
    if own or mask_queue_diagonal:
        diagonal = torch.arange(min(positive.shape), device=z.device)
        positive[diagonal, diagonal] = False
    exp = logits.exp()
    negatives = (exp * ~same).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(exp + negatives)
    num_positive = positive.sum(dim=1)
    mean_positive = (log_prob * positive).sum(dim=1) / num_positive.clamp(min=1)
    has_positive = num_positive > 0
    mean = torch.where(has_positive, mean_positive, 0).sum() / has_positive.sum().clamp(min=1)
    return -(temperature / base_temperature) * mean


class PixelContrastLoss(SegmentationContrastiveLoss):
    """Pixel contrast with hard anchors, optionally against per-class pixel and segment memory banks.

    Select it with ``contrastive: {class_path: msccl.contrastive.PixelContrastLoss}``; the module then
    builds one projection head over the concatenated taps and passes the predictions. Defaults are
    the original's Cityscapes settings (configs/cityscapes/H_48_D_4.json); the memory is off.

    Args:
        num_classes: real classes; labels are train ids in [0, num_classes) or ``ignore_index``.
        ignore_index: label id that never becomes an anchor or enters the memory.
        temperature: tau (0.1; the memory config uses 0.07).
        base_temperature: tau_base; the loss is scaled by tau / tau_base (0.07).
        max_samples: views per batch shared by all anchor classes (1024).
        max_views: cap on the views per anchor class; a class needs more pixels than this (100).
        embedding_dim: channels of the projection (the module's ``projection_dim``); sizes the memory.
        memory_size: entries per class of each queue; 0 = no memory (the memory config: 5000).
        pixel_update_freq: pixels enqueued per (image, class) per step (10).
        memory_skips_class_zero: the original never enqueues class 0 and puts zero vectors labelled 0
            in its place in the contrast set; False keeps class 0 like any class.
        pixel_queue_pool: ``image_prefix`` (the original: positions ``randperm(n)[:K]`` of the whole
            image, n the class's pixel count) or ``class`` (K random pixels of the class).
        pixel_pointer_advance: ``one`` (the original moves the pixel queue pointer by 1 after writing
            K entries) or ``count`` (by K).
        mask_queue_diagonal: the original drops queue entry i from the positives of anchor row i.
        memory_label_stride: None: the memory reads the labels downsampled to the feature size; an
            integer s: ``labels[:, ::s, ::s]`` as the original (``network.stride``; misaligned where s
            is not the feature's stride).
        gather_memory_keys: under DDP, all-gather keys and labels before the enqueue (the original
            enqueues each rank's own, and DDP's buffer broadcast then keeps rank 0's queue).
    """

    needs_predictions = True

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        max_samples: int = 1024,
        max_views: int = 100,
        embedding_dim: int = 256,
        memory_size: int = 0,
        pixel_update_freq: int = 10,
        memory_skips_class_zero: bool = True,
        pixel_queue_pool: PixelQueuePool = "image_prefix",
        pixel_pointer_advance: PixelPointerAdvance = "one",
        mask_queue_diagonal: bool = True,
        memory_label_stride: int | None = None,
        gather_memory_keys: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError("temperature and base_temperature must be positive")
        if min(max_samples, max_views, embedding_dim) < 1 or memory_size < 0:
            raise ValueError("max_samples, max_views and embedding_dim must be >= 1, memory_size >= 0")
        if memory_label_stride is not None and memory_label_stride < 1:
            raise ValueError(f"memory_label_stride must be null or >= 1, got {memory_label_stride}")
        check_option("pixel_queue_pool", pixel_queue_pool, PixelQueuePool)
        check_option("pixel_pointer_advance", pixel_pointer_advance, PixelPointerAdvance)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.max_samples = max_samples
        self.max_views = max_views
        self.embedding_dim = embedding_dim
        self.mask_queue_diagonal = mask_queue_diagonal
        self.memory_label_stride = memory_label_stride
        self.gather_memory_keys = gather_memory_keys
        self.memory = (
            None
            if memory_size == 0
            else PixelSegmentMemory(
                num_classes,
                embedding_dim,
                memory_size,
                pixel_update_freq,
                ignore_index=ignore_index,
                skip_class_zero=memory_skips_class_zero,
                pixel_pool=pixel_queue_pool,
                pointer_advance=pixel_pointer_advance,
            )
        )

    # ---- what the module gives the loss (msccl.contrastive.base) -------------------------------------
    def projection_channels(self, tap_channels: Sequence[int]) -> list[int]:
        return [sum(tap_channels)]

    def projection_inputs(self, taps: Sequence[Tensor]) -> list[Tensor]:
        """The taps upsampled to the first (highest-resolution) one and concatenated, as the original
        builds HRNet's 720-channel feature (bilinear, align_corners=True)."""
        size = taps[0].shape[-2:]
        resized = [
            x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            for x in taps
        ]
        return [torch.cat(resized, dim=1)]

    def validate_setup(self, num_taps: int, projection_dim: int) -> None:
        if projection_dim != self.embedding_dim:
            raise ValueError(self._dim_message(projection_dim))

    def _dim_message(self, channels: int) -> str:
        return (
            f"the projection has {channels} channels but PixelContrastLoss.embedding_dim is "
            f"{self.embedding_dim}: set model.init_args.contrastive.init_args.embedding_dim to "
            "model.init_args.projection_dim"
        )

    # ---- the loss -----------------------------------------------------------------------------------
    def forward(
        self,
        features: Sequence[Tensor],
        labels: Tensor,
        predictions: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and log values for one projected map ``[features[0]]`` [B, D, h, w], train-id labels and
        predicted ids [B, H, W]. With memory, the loss reads the queues, then the batch is enqueued."""
        if len(features) != 1 or features[0].dim() != 4:
            raise ValueError("PixelContrastLoss takes one projected feature map [B, D, h, w]")
        x = features[0]
        if labels.dim() != 3 or predictions.shape != labels.shape or labels.shape[0] != x.shape[0]:
            raise ValueError(
                f"labels and predictions must both be [B, H, W] with B = {x.shape[0]}, got "
                f"{tuple(labels.shape)} and {tuple(predictions.shape)}"
            )
        if x.shape[1] != self.embedding_dim:
            raise ValueError(self._dim_message(x.shape[1]))
        check_labels(labels, self.num_classes, self.ignore_index)
        batch, _, h, w = x.shape
        # Nearest downsampling (PyTorch's, as the original: the top-left pixel of each block)
        small = self._nearest(labels, (h, w)).reshape(batch, -1)
        predicted = self._nearest(predictions, (h, w)).reshape(batch, -1)
        draws = torch.rand(small.shape, generator=generator, device=x.device)
        sample = sample_hard_anchors(
            small, predicted, self.num_classes, self.ignore_index, self.max_samples, self.max_views, draws
        )
        # float32 from here (float64 stays, for exact tests)
        flat = (x if x.dtype == torch.float64 else x.float()).reshape(batch, x.shape[1], -1)
        if sample is None:
            loss = x.sum() * 0.0  # keeps the projection in the graph (DDP); the original raises here
            terms = {name: x.new_zeros(()) for name in ("anchors", "views", "hard_fraction")}
        else:
            pixels = flat.shape[2]
            # The original's head ends in F.normalize over channels; normalising only the gathered
            # vectors is the same per vector, and neither the map-sized copy nor its gradient is needed
            anchors = F.normalize(flat[sample.index // pixels, :, sample.index % pixels], dim=-1)
            contrast = None if self.memory is None else self.memory.contrast_set()
            loss = pixel_contrast_loss(
                anchors,
                sample.labels,
                self.temperature,
                self.base_temperature,
                *(contrast or (None, None)),
                mask_queue_diagonal=self.mask_queue_diagonal,
            )
            terms = {
                "anchors": torch.tensor(float(sample.index.shape[0]), device=x.device),
                "views": torch.tensor(float(sample.index.shape[1]), device=x.device),
                "hard_fraction": sample.hard_views.sum() / sample.index.numel(),
            }
        if self.memory is not None:
            with torch.no_grad():
                self._enqueue(F.normalize(flat.detach(), dim=1), labels, small, generator)
        return loss, terms

    def _nearest(self, labels: Tensor, size: tuple[int, int]) -> Tensor:
        if labels.shape[-2:] == size:
            return labels
        return F.interpolate(labels.unsqueeze(1).float(), size=size, mode="nearest").squeeze(1).long()

    def _enqueue(
        self, keys: Tensor, labels: Tensor, small: Tensor, generator: torch.Generator | None
    ) -> None:
        """The batch's keys enter the queues after the loss read them (all ranks' under DDP)."""
        stride = self.memory_label_stride
        key_labels = small if stride is None else labels[:, ::stride, ::stride].reshape(labels.shape[0], -1)
        if key_labels.shape[1] > keys.shape[2]:
            raise ValueError(
                f"memory_label_stride={stride} gives {key_labels.shape[1]} label positions for a feature "
                f"of {keys.shape[2]} pixels: use the network's output stride or null"
            )
        if self.gather_memory_keys and world_size() > 1:
            keys, key_labels = gather_samples(keys, key_labels)
        self.memory.enqueue(keys, key_labels, generator=generator)
