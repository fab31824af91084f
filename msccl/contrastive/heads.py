"""Projection heads of docs/method.md A1: one per tapped scale, used in training only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from torch import Tensor, nn

__all__ = ["ProjectionHead", "ProjectionHeads", "ProjectionLayout"]

ProjectionLayout = Literal["mscs", "convmlp"]


class ProjectionHead(nn.Sequential):
    """Conv1x1(C -> C, no bias) -> ReLU -> BatchNorm(C) -> Conv1x1(C -> dim, bias), the paper's head.

    ``layout="convmlp"`` is ContrastiveSeg's head instead (pixel contrast, docs/method.md P1):
    Conv1x1(C -> C, bias) -> BatchNorm(C) -> ReLU -> Conv1x1(C -> dim, bias); its final L2 normalisation
    is the loss's.

    The output is not normalised: the loss L2-normalises the sampled vectors. `bn_momentum` is PyTorch's
    BatchNorm momentum (0.1); the official code uses 0.0003, which changes only the running statistics,
    i.e. nothing the loss sees in training and nothing at inference, where the heads never run.
    """

    def __init__(
        self, in_channels: int, dim: int = 256, bn_momentum: float = 0.1, layout: ProjectionLayout = "mscs"
    ) -> None:
        if layout not in get_args(ProjectionLayout):
            raise ValueError(f"projection layout must be mscs or convmlp, got {layout!r}")
        norm = nn.BatchNorm2d(in_channels, momentum=bn_momentum)
        middle = [nn.ReLU(inplace=True), norm] if layout == "mscs" else [norm, nn.ReLU(inplace=True)]
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=layout == "convmlp"),
            *middle,
            nn.Conv2d(in_channels, dim, kernel_size=1, bias=True),
        )
        self.in_channels = in_channels
        self.dim = dim


class ProjectionHeads(nn.ModuleList):
    """One ``ProjectionHead`` per scale; maps the list of tapped maps to the list of projections.

    ``in_channels`` lists the channels of the taps, highest resolution first (e.g. 48/96/192/384 for
    HRNetV2-W48). All heads project to the same ``dim`` so that scales can be contrasted with each other.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        dim: int = 256,
        bn_momentum: float = 0.1,
        layout: ProjectionLayout = "mscs",
    ) -> None:
        if not in_channels:
            raise ValueError("ProjectionHeads needs the channels of at least one tapped scale")
        super().__init__(ProjectionHead(c, dim, bn_momentum, layout) for c in in_channels)
        self.dim = dim

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self):
            raise ValueError(f"got {len(features)} feature maps for {len(self)} projection heads")
        return [head(x) for head, x in zip(self, features, strict=True)]
