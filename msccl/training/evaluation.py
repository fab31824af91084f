"""How logits are computed when evaluating: whole image, sliding window, multi-scale + flip TTA.

docs/method.md C2: the paper evaluates with sliding windows (e.g. 512x1024 on Cityscapes) and multi-scale +
flip test-time augmentation, logits averaged at full resolution. `Evaluation` is the model's
`evaluation` config key (`model.init_args.evaluation.mode=sliding ...`); it applies to validate, test
and predict, and to the validation inside fit only when `during_fit` is set (it multiplies the cost).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    """

    mode: Literal["whole", "sliding"] = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    size_divisor: int = 32
    during_fit: bool = False

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

    @property
    def window_stride(self) -> tuple[int, int]:
        if self.stride is not None:
            return self.stride
        assert self.crop is not None
        return (max(1, 2 * self.crop[0] // 3), max(1, 2 * self.crop[1] // 3))

    def __call__(self, infer: Infer, images: Tensor) -> Tensor:
        """Float32 logits [B, C, H, W] at the size of `images` [B, 3, H, W]."""
        size = images.shape[-2:]
        total: Tensor | None = None
        passes = 0
        for scale in self.scales:
            scaled = _resize(images, _scaled_size(size, scale))
            for mirrored in (False, True) if self.flip else (False,):
                logits = self._one_pass(infer, scaled.flip(-1) if mirrored else scaled)
                logits = _resize(logits.flip(-1) if mirrored else logits, size)
                total = logits if total is None else total + logits
                passes += 1
        assert total is not None
        return total / passes

    def _one_pass(self, infer: Infer, images: Tensor) -> Tensor:
        def padded(x: Tensor) -> Tensor:
            return padded_inference(infer, x, self.size_divisor)

        if self.mode == "sliding":
            assert self.crop is not None
            return sliding_window(padded, images, self.crop, self.window_stride)
        return padded(images)


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
    height, width = images.shape[-2:]
    crop_h, crop_w = crop
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    padded_h, padded_w = images.shape[-2:]
    total: Tensor | None = None
    count = torch.zeros(1, 1, padded_h, padded_w, device=images.device)
    for top in window_starts(padded_h, crop_h, stride[0]):
        for left in window_starts(padded_w, crop_w, stride[1]):
            window = (..., slice(top, top + crop_h), slice(left, left + crop_w))
            logits = infer(images[window]).float()
            if total is None:
                total = logits.new_zeros(logits.shape[:2] + (padded_h, padded_w))
            total[window] += logits
            count[window] += 1
    assert total is not None
    return (total / count)[..., :height, :width]


def _scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def _resize(tensor: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)
