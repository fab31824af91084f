"""How logits are computed when evaluating: whole image, sliding window, multi-scale + flip TTA.

The paper evaluates with sliding windows (e.g. 512x1024 on Cityscapes) and multi-scale + flip test-time
augmentation, logits averaged at full resolution (docs/method.md C2). `Evaluation` is the model's
`evaluation` config key (`model.init_args.evaluation.mode=sliding ...`); it applies to validate, test
and predict, and to the validation inside fit only when `during_fit` is set (it multiplies the cost).
`fusion="sum_exp"` with `whole_below_scale=1.0` and `align_corners=True` is the official code's
Cityscapes protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Evaluation", "padded_inference", "sliding_window", "window_starts"]

Infer = Callable[[Tensor], Tensor]
"""Images [B, 3, h, w] -> logits [B, C, h, w] at the input size (e.g. `SegmentationModule.forward`)."""


@dataclass(frozen=True)
class Evaluation:
    """Inference for evaluation and prediction.

    Args:
        mode: "whole" infers the whole image at once; "sliding" infers `crop`-sized windows placed every
            `stride` pixels (the last one flush with the border) and averages the logits where windows
            overlap; an image smaller than the crop is zero-padded (the mean colour after normalisation)
            and the padding cropped off the logits.
        crop: sliding-window size (height, width).
        stride: step between windows (height, width); default two thirds of the crop.
        scales: resize factors of test-time augmentation; the logits of every scale are resized back to
            the input size and averaged. (1.0,) is no multi-scale augmentation.
        flip: also infer each scale's horizontal mirror image (its logits mirrored back) and average.
        size_divisor: every network input (whole image or window) is zero-padded at the bottom and right
            to a multiple of this (the networks' largest stride, 32 for the encoders msccl builds) and
            the padding cropped off the logits, so images of any size can be evaluated.
        during_fit: use this evaluation for the validation inside `fit` too; otherwise `fit` validates
            on whole images at one scale, which is cheaper and enough to pick checkpoints.
        window_batch_size: how many network inputs (windows of every scale and flip; whole images of
            one scale and its mirror) go through the network in one forward, each holding the batch's
            B images: B x window_batch_size images per forward. 1 infers them one at a time; more fills
            a GPU (the paper's Cityscapes protocol has 9 windows x 6 scales x 2 flips per image). The
            logits are the same up to float rounding (eval mode: no image sees another).
        fusion: how views are combined. "mean_logits" averages the logits of every window, scale and
            mirror image. "sum_exp" is the official code's Cityscapes fusion: each network input and its
            mirror image are inferred together and their logits averaged, exponentiated, averaged where
            windows overlap, resized to the input size and summed over scales; the result is returned as
            the log of that sum (same argmax; computed in the log domain, so large logits do not
            overflow where the official float32 `exp` would).
        whole_below_scale: with mode "sliding", scales below this infer the whole resized image (the
            official Cityscapes protocol: 1.0); None slides windows at every scale.
        align_corners: `align_corners` of the bilinear resize of each scale's result back to the input
            size (the official Cityscapes protocol follows its HRNet config: true). Images are always
            resized with half-pixel centres, as OpenCV's INTER_LINEAR does in the official code.
        max_whole_pixels: `msccl predict` and `msccl.Segmenter` (`for_size`) infer an image in
            `large_image_window` windows (sliding, default stride) instead of whole when one of its scaled
            views has more pixels than this: the network's activations grow with the pixels it sees at
            once, so a whole photo of tens of megapixels can take gigabytes; in windows they are one
            window's, plus the averaged logits, (classes + 1) x 4 bytes per pixel. Validation and test
            keep the configured mode (their protocol).
        large_image_window: the window (height, width) of those images.
    """

    mode: Literal["whole", "sliding"] = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    size_divisor: int = 32
    during_fit: bool = False
    window_batch_size: int = 1
    fusion: Literal["mean_logits", "sum_exp"] = "mean_logits"
    whole_below_scale: float | None = None
    align_corners: bool = False
    max_whole_pixels: int = 2048 * 2048
    large_image_window: tuple[int, int] = (1024, 1024)

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "sliding"):
            raise ValueError(f"evaluation.mode must be 'whole' or 'sliding', got {self.mode!r}")
        if self.mode == "sliding":
            if self.crop is None or len(self.crop) != 2 or min(self.crop) < 1:
                raise ValueError(f"evaluation.mode=sliding needs crop=[height, width], got {self.crop}")
            if self.stride is not None and (len(self.stride) != 2 or min(self.stride) < 1):
                raise ValueError(f"evaluation.stride must be [height, width] > 0, got {self.stride}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"evaluation.scales must be positive factors, got {self.scales}")
        if self.size_divisor < 1:
            raise ValueError(f"evaluation.size_divisor must be >= 1, got {self.size_divisor}")
        if self.window_batch_size < 1:
            raise ValueError(f"evaluation.window_batch_size must be >= 1, got {self.window_batch_size}")
        if self.fusion not in _FUSIONS:
            raise ValueError(f"evaluation.fusion must be one of {sorted(_FUSIONS)}, got {self.fusion!r}")
        if self.whole_below_scale is not None and self.mode != "sliding":
            raise ValueError(
                "evaluation.whole_below_scale needs mode=sliding (it picks whole images or windows)"
            )
        if self.max_whole_pixels < 1 or len(self.large_image_window) != 2 or min(self.large_image_window) < 1:
            raise ValueError(
                "evaluation.max_whole_pixels must be >= 1 and large_image_window [height, width] > 0, got "
                f"{self.max_whole_pixels} and {self.large_image_window}"
            )

    def for_size(self, size: Sequence[int]) -> Evaluation:
        """This evaluation, or for an image of `size` (height, width) whose largest scaled view exceeds
        `max_whole_pixels` in whole mode, the same in sliding `large_image_window` windows."""
        largest = _scaled_size(size, max(self.scales))
        if self.mode != "whole" or largest[0] * largest[1] <= self.max_whole_pixels:
            return self
        return replace(self, mode="sliding", crop=tuple(self.large_image_window), stride=None)

    @property
    def window_stride(self) -> tuple[int, int]:
        if self.stride is not None:
            return self.stride
        assert self.crop is not None
        return (max(1, 2 * self.crop[0] // 3), max(1, 2 * self.crop[1] // 3))

    def __call__(self, infer: Infer, images: Tensor) -> Tensor:
        """Float32 logits [B, C, H, W] at the size of `images` [B, 3, H, W] (with fusion "sum_exp": the
        log of the summed scores, which has the same argmax and softmax)."""
        size = images.shape[-2:]
        # "sum_exp" infers each input together with its mirror (flip_pairs); "mean_logits" makes the
        # mirror image a view of its own
        pair_flips = self.fusion == "sum_exp" and self.flip
        mirrorings = (False,) if pair_flips else self._mirrorings
        views, mirrored, crops = [], [], []
        for scale in self.scales:
            scaled = _resize(images, _scaled_size(size, scale))
            whole = self.mode == "whole" or (
                self.whole_below_scale is not None and scale < self.whole_below_scale
            )
            for mirror in mirrorings:
                views.append(scaled.flip(-1) if mirror else scaled)
                mirrored.append(mirror)
                crops.append(None if whole else self.crop)
        combine = _FUSIONS[self.fusion]
        results = _windowed(
            infer,
            views,
            crops,
            self.window_stride if self.mode == "sliding" else None,
            self.size_divisor,
            self.window_batch_size,
            combine=combine.windows,
            flip_pairs=pair_flips,
        )
        total: Tensor | None = None
        for index, view_result in results:
            view_result = combine.resize(
                view_result.flip(-1) if mirrored[index] else view_result, size, self.align_corners
            )
            total = view_result if total is None else combine.add(total, view_result)
        assert total is not None
        return combine.finish(total, len(views))

    @property
    def _mirrorings(self) -> tuple[bool, ...]:
        return (False, True) if self.flip else (False,)


def padded_inference(infer: Infer, images: Tensor, size_divisor: int) -> Tensor:
    """Float32 logits of `images` zero-padded to a multiple of `size_divisor`, padding cropped off."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % size_divisor, -width % size_divisor
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    return infer(images).float()[..., :height, :width]


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Offsets of the windows along one axis: every `stride`, the last one flush with the end."""
    last = max(size - crop, 0)
    return [*range(0, last, stride), last]


def sliding_window(infer: Infer, images: Tensor, crop: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Float32 logits of `images` [B, 3, H, W] averaged over overlapping `crop`-sized windows."""
    ((_, logits),) = _windowed(infer, [images], [crop], stride, size_divisor=1, window_batch_size=1)
    return logits


def _windowed(
    infer: Infer,
    views: Sequence[Tensor],
    crops: Sequence[Sequence[int] | None],
    stride: Sequence[int] | None,
    size_divisor: int,
    window_batch_size: int,
    combine: Literal["mean", "log_mean_exp"] = "mean",
    flip_pairs: bool = False,
) -> Iterator[tuple[int, Tensor]]:
    """(index, float32 logits) of each view [B, 3, h, w], combined over its overlapping windows of size
    `crops[index]` (None: the whole view is its one window), yielded in order as soon as its last window
    is done, so that only the views in flight hold full-size logits.

    `combine` "mean" averages the logits where windows overlap; "log_mean_exp" averages their exp and
    returns its log. `flip_pairs` infers every network input with its mirror image in the same forward
    and averages their logits (the mirror's mirrored back) before combining.

    A view smaller than its crop is zero-padded to it. Consecutive windows of the same size, across views,
    are stacked along the batch, `window_batch_size` at a time, and every network input is zero-padded
    to a multiple of `size_divisor` (`padded_inference`); the padding is cropped off the logits.
    """
    batch = views[0].shape[0]
    padded_views, windows = [], []  # windows: (view index, (top, left, height, width))
    for index, (view, crop) in enumerate(zip(views, crops, strict=True)):
        height, width = view.shape[-2:]
        crop_h, crop_w = (height, width) if crop is None else crop
        view = F.pad(view, (0, max(crop_w - width, 0), 0, max(crop_h - height, 0)))
        padded_views.append(view)
        if crop is None:
            windows.append((index, (0, 0, height, width)))
            continue
        assert stride is not None
        windows += [
            (index, (top, left, crop_h, crop_w))
            for top in window_starts(view.shape[-2], crop_h, stride[0])
            for left in window_starts(view.shape[-1], crop_w, stride[1])
        ]
    empty = 0.0 if combine == "mean" else -math.inf
    totals: list[Tensor | None] = [None] * len(views)
    counts: list[Tensor | None] = [torch.zeros(1, 1, *v.shape[-2:], device=v.device) for v in padded_views]
    remaining = [sum(i == index for i, _ in windows) for index in range(len(views))]
    start = 0
    while start < len(windows):
        shape = windows[start][1][2:]
        end = start + 1
        while end < len(windows) and end - start < window_batch_size and windows[end][1][2:] == shape:
            end += 1
        chunk = windows[start:end]
        inputs = torch.cat(
            [padded_views[i][..., top : top + h, left : left + w] for i, (top, left, h, w) in chunk]
        )
        if flip_pairs:
            both = padded_inference(infer, torch.cat([inputs, inputs.flip(-1)]), size_divisor)
            logits = (both[: len(inputs)] + both[len(inputs) :].flip(-1)) / 2
        else:
            logits = padded_inference(infer, inputs, size_divisor)
        for k, (i, (top, left, h, w)) in enumerate(chunk):
            if totals[i] is None:
                totals[i] = logits.new_full((batch, logits.shape[1], *padded_views[i].shape[-2:]), empty)
            region = totals[i][..., top : top + h, left : left + w]
            window_logits = logits[k * batch : (k + 1) * batch]
            if combine == "mean":
                region += window_logits
            else:
                torch.logaddexp(region, window_logits, out=region)
            counts[i][..., top : top + h, left : left + w] += 1
            remaining[i] -= 1
            if remaining[i] == 0:
                height, width = views[i].shape[-2:]
                combined = totals[i] / counts[i] if combine == "mean" else totals[i] - counts[i].log()
                yield i, combined[..., :height, :width]
                totals[i] = counts[i] = None
        start = end


def _scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def _resize(tensor: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=align_corners)


@dataclass(frozen=True)
class _Fusion:
    """How `Evaluation` combines views: over windows (`_windowed`'s combine), the resize of a view's
    result to the input size, the sum of two views' results and the final result of the sum of n views."""

    windows: Literal["mean", "log_mean_exp"]
    resize: Callable[[Tensor, Sequence[int], bool], Tensor]
    add: Callable[[Tensor, Tensor], Tensor]
    finish: Callable[[Tensor, int], Tensor]


def _resize_exp(log_scores: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
    """log(bilinear resize of exp(log_scores)), computed in the log domain one axis at a time: each
    output is w0 * exp(a) + w1 * exp(b) of its two source pixels, i.e. logaddexp(a + log w0, b + log w1),
    so no exp overflows or underflows (source positions and weights as `F.interpolate` computes them)."""
    for axis, length in ((-2, size[0]), (-1, size[1])):
        if log_scores.shape[axis] != length:
            low, high, weight = _bilinear_sources(log_scores.shape[axis], length, align_corners, log_scores)
            shape = [1] * log_scores.dim()
            shape[axis] = length
            low, high, weight = low.view(shape), high.view(shape), weight.view(shape)
            log_scores = torch.logaddexp(
                log_scores.index_select(axis, low.flatten()) + torch.log1p(-weight),
                log_scores.index_select(axis, high.flatten()) + weight.log(),
            )
    return log_scores


def _bilinear_sources(
    source: int, target: int, align_corners: bool, like: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """For each of `target` output positions along an axis of length `source`: the lower and upper source
    index and the upper one's weight, as PyTorch's bilinear interpolation computes them."""
    position = torch.arange(target, dtype=torch.float64)  # on the CPU: not every device has float64
    if align_corners:
        position = position * ((source - 1) / (target - 1) if target > 1 else 0.0)
    else:
        position = ((position + 0.5) * (source / target) - 0.5).clamp_min(0)
    low = position.floor().long().clamp_max(source - 1)
    high = (low + 1).clamp_max(source - 1)
    return low.to(like.device), high.to(like.device), (position - low).to(like.device, like.dtype)


_FUSIONS: dict[str, _Fusion] = {
    "mean_logits": _Fusion("mean", _resize, torch.add, lambda total, views: total / views),
    # The official Cityscapes protocol sums exp(logits); summing in the log domain keeps logits above ~88
    # from overflowing float32
    "sum_exp": _Fusion("log_mean_exp", _resize_exp, torch.logaddexp, lambda total, views: total),
}
