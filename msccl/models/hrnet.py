"""HRNetV2 (Wang et al., 2020) for segmentation: a timm HRNet encoder and the HRNetV2 head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import timm
from torch import Tensor, nn

from msccl.models._heads import ConvHead, concat_at_highest_resolution
from msccl.models.base import SegmentationNet, Tap, validate_tap_stages
from msccl.models.registry import register
from msccl.models.weights import Pretrained, timm_weight_kwargs

__all__ = ["HRNet", "HRNetBackbone", "HRNET_HEADS"]

_BRANCH_STAGES = (2, 3, 4, 5)  # branch i runs at stride 4 * 2**i: "stage" 2..5 as for smp encoders


def _hrnetv2_head(width: int, num_classes: int) -> nn.Module:
    """HRNetV2's published head: conv1x1-BN-ReLU-conv1x1 (Wang et al., 2020; timm/mmsegmentation)."""
    return ConvHead(width, width, num_classes, kernel_size=1, dropout=0.0)


def _official_head(width: int, num_classes: int) -> nn.Module:
    """The authors' HRNet classifier (models/HRNet.py of their code): conv3x3 (bias)-BN-conv1x1 (no bias),
    without a ReLU between them."""
    return nn.Sequential(
        nn.Conv2d(width, width, kernel_size=3, padding=1),
        nn.BatchNorm2d(width),
        nn.Conv2d(width, num_classes, kernel_size=1, bias=False),
    )


HRNET_HEADS: dict[str, Callable[[int, int], nn.Module]] = {"msccl": _hrnetv2_head, "official": _official_head}
"""HRNet classifier heads by name: (concatenated branch width, classes) -> module."""


class HRNetBackbone(nn.Module):
    """The four branch outputs of timm HRNet's last stage (strides 4/8/16/32; 48/96/192/384 for W48).

    `features_only` with `feature_location=''`: timm's default would return the incre-module features
    (128/256/512/1024 channels), not the branch outputs the paper taps (docs/pitfalls.md).
    timm HRNet supports output stride 32 only.
    """

    def __init__(self, name: str = "hrnet_w48", pretrained: Pretrained = False) -> None:
        super().__init__()
        if not name.startswith("hrnet"):
            raise ValueError(
                f"HRNet backbone {name!r}: expected a timm HRNet such as hrnet_w18_small or hrnet_w48"
            )
        self.body = timm.create_model(
            name,
            features_only=True,
            feature_location="",
            out_indices=(1, 2, 3, 4),
            **timm_weight_kwargs(name, pretrained),
        )
        self.branches = tuple(
            Tap(c, r)
            for c, r in zip(
                self.body.feature_info.channels(), self.body.feature_info.reduction(), strict=True
            )
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.body(x)


def select_branches(tap_stages: Sequence[int]) -> tuple[int, ...]:
    """Branch indices for tap stages 2..5 (stage k = the branch at stride 2**k)."""
    return tuple(_BRANCH_STAGES.index(s) for s in validate_tap_stages(tap_stages, _BRANCH_STAGES))


@register
class HRNet(SegmentationNet):
    """HRNetV2: all branches upsampled to stride 4 and concatenated, then a classifier head (`head`).

    Taps: the branch outputs of the last stage before that concatenation (docs/method.md A1).

    Args:
        backbone: timm HRNet: hrnet_w18_small, hrnet_w18_small_v2, hrnet_w18, hrnet_w32, hrnet_w48, ...
        pretrained: ImageNet weights: False, True (local cache), or a weights file (msccl.models.weights).
        tap_stages: which branches to tap, by stage (2 = stride 4 ... 5 = stride 32).
        head: "msccl" (HRNetV2's conv1x1-BN-ReLU-conv1x1) or "official" (the authors' conv3x3-BN-conv1x1
            without ReLU).
        align_corners: bilinear `align_corners` when upsampling branches and logits (official: true).
    """

    presets = {"paper": {"backbone": "hrnet_w48"}, "small": {"backbone": "hrnet_w18_small"}}

    def __init__(
        self,
        num_classes: int,
        backbone: str = "hrnet_w48",
        pretrained: Pretrained = False,
        tap_stages: Sequence[int] = _BRANCH_STAGES,
        head: Literal["msccl", "official"] = "msccl",
        align_corners: bool = False,
    ) -> None:
        super().__init__(num_classes)
        if head not in HRNET_HEADS:
            raise ValueError(f"head={head!r}: choose one of {sorted(HRNET_HEADS)}")
        self.backbone = HRNetBackbone(backbone, pretrained)
        self.tap_branches = select_branches(tap_stages)
        self.taps = tuple(self.backbone.branches[i] for i in self.tap_branches)
        self.align_corners = align_corners
        width = sum(tap.channels for tap in self.backbone.branches)
        self.head = HRNET_HEADS[head](width, num_classes)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        branches = self.backbone(x)
        logits = self.head(concat_at_highest_resolution(branches, self.align_corners))
        return logits, None, [branches[i] for i in self.tap_branches]
