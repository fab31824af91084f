"""OCRNet (Yuan, Chen, Wang: Object-Contextual Representations for Semantic Segmentation, ECCV 2020).

The head follows the published design and the authors' HRNet-OCR code:
1. soft object regions: a small head predicts class logits from the backbone (the auxiliary output,
   trained with the auxiliary CE);
2. object region representations: per class, the softmax-over-pixels of its region map weights the
   pixel representations (spatial gather);
3. pixel-region relation: each pixel attends to the K region representations (scaled dot product);
4. augmented representation: the attended object context, concatenated with the pixel
   representation, fused by conv1x1-BN-ReLU (+dropout) and classified.

`head` picks the soft-region head and the fusion dropout (`OCR_HEADS`): "msccl" (HRNet-OCR's published
design and mmsegmentation's) or "official" (the authors' models/OCR.py); docs/method.md "Differences from
the official code" compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msccl.models._heads import ConvBNReLU, ConvHead, concat_at_highest_resolution
from msccl.models._smp import build_smp_encoder, encoder_taps
from msccl.models.base import SegmentationNet
from msccl.models.hrnet import HRNetBackbone, select_branches
from msccl.models.registry import register
from msccl.models.weights import Pretrained

__all__ = ["OCRNet", "OCRHead", "OCR_HEADS", "OCRHeadStyle"]


def _msccl_region_head(
    in_channels: int, num_classes: int, uses_hrnet: bool, mid_channels: int, region_channels: int
) -> nn.Module:
    """HRNet-OCR's conv1x1(720->720)-BN-ReLU-conv1x1; on smp encoders' stage 4, mmsegmentation's FCN head."""
    if uses_hrnet:
        return ConvHead(in_channels, in_channels, num_classes, kernel_size=1, dropout=0.0)
    return ConvHead(in_channels, region_channels, num_classes, kernel_size=3, dropout=0.1)


def _official_region_head(
    in_channels: int, num_classes: int, uses_hrnet: bool, mid_channels: int, region_channels: int
) -> nn.Module:
    """The authors' models/OCR.py for every backbone: conv3x3(in -> 512)-BN-ReLU-conv1x1, no dropout."""
    return ConvHead(in_channels, mid_channels, num_classes, kernel_size=3, dropout=0.0)


class OCRHeadStyle(NamedTuple):
    """An OCRNet head variant: its soft-region head builder and the dropout after the fusion."""

    region_head: Callable[[int, int, bool, int, int], nn.Module]
    fusion_dropout: float


OCR_HEADS: dict[str, OCRHeadStyle] = {
    "msccl": OCRHeadStyle(_msccl_region_head, fusion_dropout=0.05),
    "official": OCRHeadStyle(_official_region_head, fusion_dropout=0.0),
}
"""OCRNet head variants by name (OCRNet's `head` setting)."""


class OCRHead(nn.Module):
    """Object-contextual representations from pixel features and soft object regions (steps 2-4)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        mid_channels: int = 512,
        key_channels: int = 256,
        dropout: float = 0.05,
    ) -> None:
        super().__init__()
        self.pixel = ConvBNReLU(in_channels, mid_channels, kernel_size=3)
        self.query = nn.Sequential(
            ConvBNReLU(mid_channels, key_channels), ConvBNReLU(key_channels, key_channels)
        )
        self.key = nn.Sequential(
            ConvBNReLU(mid_channels, key_channels), ConvBNReLU(key_channels, key_channels)
        )
        self.value = ConvBNReLU(mid_channels, key_channels)
        self.context_up = ConvBNReLU(key_channels, mid_channels)
        self.fuse = nn.Sequential(ConvBNReLU(2 * mid_channels, mid_channels), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)
        self.key_channels = key_channels

    def forward(self, features: Tensor, region_logits: Tensor) -> Tensor:
        pixels = self.pixel(features)  # [B, C, H, W]
        b, c, h, w = pixels.shape
        # 2. object region representations: [B, C, K, 1], K = classes
        region_weights = region_logits.flatten(2).softmax(dim=2)  # softmax over pixels, per class
        regions = torch.bmm(region_weights, pixels.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(3)
        # 3. pixel-region relation
        query = self.query(pixels).flatten(2).transpose(1, 2)  # [B, HW, Ck]
        key = self.key(regions).flatten(2)  # [B, Ck, K]
        value = self.value(regions).flatten(2).transpose(1, 2)  # [B, K, Ck]
        relation = (torch.bmm(query, key) * self.key_channels**-0.5).softmax(dim=-1)  # [B, HW, K]
        context = torch.bmm(relation, value).transpose(1, 2).reshape(b, self.key_channels, h, w)
        # 4. augmented representation
        augmented = self.fuse(torch.cat([self.context_up(context), pixels], dim=1))
        return self.classifier(augmented)


@register
class OCRNet(SegmentationNet):
    """OCR head over HRNetV2 or a dilated ResNet (or any smp encoder), with the soft-region auxiliary head.

    - HRNet backbone (name starting with "hrnet"): the concatenated branches (as HRNetV2) feed both the
      soft-region head (conv1x1-BN-ReLU-conv1x1, as HRNet-OCR) and the OCR head; taps: the branch
      outputs, i.e. stages 2..5 (docs/method.md A1).
    - any other name is an smp encoder (e.g. resnet101, tu-resnet50) at `output_stride` (default 8):
      soft regions from encoder stage 4 (FCN head: conv3x3-BN-ReLU, dropout, conv1x1), pixels from
      stage 5, as in the OCR paper; taps default to stages 2 and 5.

    Args:
        backbone: timm HRNet name, or smp encoder name.
        pretrained: ImageNet weights: False, True (local cache), or a weights file (msccl.models.weights).
        tap_stages: stages to tap (stage k has stride 2**k before dilation); None: the defaults above.
        output_stride: 8 or 16 for smp encoders (HRNet is always 32 with branches down to stride 4).
        mid_channels, key_channels: OCR widths (512 / 256 in the paper).
        region_channels: width of the soft-region head for smp encoders (256 in mmsegmentation).
        head: "msccl" (the heads above, fusion dropout 0.05) or "official" (the authors' soft-region head
            conv3x3(in -> mid_channels)-BN-ReLU-conv1x1 for every backbone, no dropout): `OCR_HEADS`.
        align_corners: bilinear `align_corners` when upsampling branches and logits (official: true).
    """

    presets = {
        "paper": {"backbone": "hrnet_w48"},
        "small": {"backbone": "hrnet_w18_small", "mid_channels": 64, "key_channels": 32},
    }

    def __init__(
        self,
        num_classes: int,
        backbone: str = "hrnet_w48",
        pretrained: Pretrained = False,
        tap_stages: Sequence[int] | None = None,
        output_stride: int = 8,
        mid_channels: int = 512,
        key_channels: int = 256,
        region_channels: int = 256,
        head: Literal["msccl", "official"] = "msccl",
        align_corners: bool = False,
    ) -> None:
        super().__init__(num_classes)
        if head not in OCR_HEADS:
            raise ValueError(f"head={head!r}: choose one of {sorted(OCR_HEADS)}")
        style = OCR_HEADS[head]
        self.align_corners = align_corners
        self.uses_hrnet = backbone.startswith("hrnet")
        if self.uses_hrnet:
            self.backbone = HRNetBackbone(backbone, pretrained)
            self.tap_branches = select_branches((2, 3, 4, 5) if tap_stages is None else tap_stages)
            self.taps = tuple(self.backbone.branches[i] for i in self.tap_branches)
            regions_channels = pixel_channels = sum(tap.channels for tap in self.backbone.branches)
        else:
            self.backbone = build_smp_encoder(backbone, pretrained, output_stride)
            stages = (2, 5) if tap_stages is None else tuple(tap_stages)
            self.taps = encoder_taps(self.backbone, stages)
            self.tap_stages = stages
            regions_channels, pixel_channels = self.backbone.out_channels[4], self.backbone.out_channels[5]
        self.region_head = style.region_head(
            regions_channels, num_classes, self.uses_hrnet, mid_channels, region_channels
        )
        self.ocr = OCRHead(pixel_channels, num_classes, mid_channels, key_channels, style.fusion_dropout)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        features = self.backbone(x)
        if self.uses_hrnet:
            pixels = regions_input = concat_at_highest_resolution(features, self.align_corners)
            taps = [features[i] for i in self.tap_branches]
        else:
            regions_input, pixels = features[4], features[5]
            taps = [features[s] for s in self.tap_stages]
        region_logits = self.region_head(regions_input)
        if region_logits.shape[-2:] != pixels.shape[-2:]:  # output stride 16/32: stage 4 finer than stage 5
            region_logits = F.interpolate(
                region_logits, size=pixels.shape[-2:], mode="bilinear", align_corners=self.align_corners
            )
        return self.ocr(pixels, region_logits), region_logits, taps
