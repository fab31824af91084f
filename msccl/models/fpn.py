"""FPN (Kirillov et al., 2019) from segmentation-models-pytorch: the small, fast default of the demo."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import segmentation_models_pytorch as smp

from msccl.models._smp import SmpNet, build_with_encoder_weights
from msccl.models.registry import register
from msccl.models.weights import Pretrained


@register
class FPN(SmpNet):
    """smp FPN over any smp/timm (`tu-` prefix) encoder; taps the encoder stages at strides 4-32.

    Args:
        encoder: smp encoder name, or a timm one with the `tu-` prefix (e.g. tu-efficientnet_lite0).
        pretrained: ImageNet weights: False, True (local cache), or a weights file (msccl.models.weights).
        pyramid_channels, segmentation_channels: decoder widths.
        tap_stages: encoder stages to tap (stage k has stride 2**k).
        encoder_kwargs: extra `timm.create_model` arguments for `tu-` encoders.
    """

    presets = {"small": {"encoder": "resnet18", "pyramid_channels": 64, "segmentation_channels": 32}}

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet18",
        pretrained: Pretrained = False,
        pyramid_channels: int = 128,
        segmentation_channels: int = 64,
        tap_stages: Sequence[int] = (2, 3, 4, 5),
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        build = partial(
            smp.FPN,
            encoder_name=encoder,
            classes=num_classes,
            decoder_pyramid_channels=pyramid_channels,
            decoder_segmentation_channels=segmentation_channels,
        )
        super().__init__(
            num_classes, build_with_encoder_weights(build, encoder, pretrained, encoder_kwargs), tap_stages
        )
