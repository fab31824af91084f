"""Small heads shared by several architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvHead", "ConvBNReLU", "concat_at_highest_resolution"]


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ConvHead(nn.Sequential):
    """conv(k x k)-BN-ReLU, dropout, conv(1x1) to classes.

    The FCN head of mmsegmentation (UPerNet's auxiliary head: k=3, dropout 0.1), HRNetV2's segmentation
    head and OCRNet-HRNet's soft object region head (k=1, channels = input channels, no dropout).
    """

    def __init__(
        self, in_channels: int, channels: int, num_classes: int, kernel_size: int = 3, dropout: float = 0.1
    ) -> None:
        super().__init__(
            ConvBNReLU(in_channels, channels, kernel_size),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(channels, num_classes, 1),
        )


def concat_at_highest_resolution(features: list[Tensor], align_corners: bool = False) -> Tensor:
    """Bilinearly upsample every map to the first (highest-resolution) one and concatenate channels."""
    size = features[0].shape[-2:]
    resized = [features[0]] + [
        F.interpolate(f, size=size, mode="bilinear", align_corners=align_corners) for f in features[1:]
    ]
    return torch.cat(resized, dim=1)
