"""Projection heads of docs/method.md A1: one per tapped scale, used in training only."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["ProjectionHead", "ProjectionHeads"]


class ProjectionHead(nn.Sequential):
    """Conv1x1(C -> C, no bias) -> ReLU -> BatchNorm(C) -> Conv1x1(C -> dim, bias) (docs/method.md A1).

    The output is not normalised: the loss L2-normalises the sampled vectors. `bn_momentum` is PyTorch's
    BatchNorm momentum (0.1); the official code uses 0.0003, which changes only the running statistics,
    i.e. nothing the loss sees in training and nothing at inference, where the heads never run.
    """

    def __init__(self, in_channels: int, dim: int = 256, bn_momentum: float = 0.1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=False),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(in_channels, momentum=bn_momentum),
            nn.Conv2d(in_channels, dim, kernel_size=1, bias=True),
        )
        self.in_channels = in_channels
        self.dim = dim


class ProjectionHeads(nn.ModuleList):
    """One ``ProjectionHead`` per scale; maps the list of tapped maps to the list of projections.

    ``in_channels`` lists the channels of the taps, highest resolution first (e.g. 48/96/192/384 for
    HRNetV2-W48). All heads project to the same ``dim`` so that scales can be contrasted (A4).
    """

    def __init__(self, in_channels: Sequence[int], dim: int = 256, bn_momentum: float = 0.1) -> None:
        if not in_channels:
            raise ValueError("ProjectionHeads needs the channels of at least one tapped scale")
        super().__init__(ProjectionHead(c, dim, bn_momentum) for c in in_channels)
        self.dim = dim

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self):
            raise ValueError(f"got {len(features)} feature maps for {len(self)} projection heads")
        return [head(x) for head, x in zip(self, features, strict=True)]
