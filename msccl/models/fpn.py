"""FPN (Kirillov et al., 2019) from segmentation-models-pytorch: the small, fast default of the demo."""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp

from msccl.models._smp import SmpNet
from msccl.models.registry import register


@register
class FPN(SmpNet):
    """smp FPN over any smp/timm (`tu-` prefix) encoder; taps the encoder stages at strides 4-32."""

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet18",
        pyramid_channels: int = 128,
        segmentation_channels: int = 64,
        tap_stages: Sequence[int] = (2, 3, 4, 5),
    ) -> None:
        model = smp.FPN(
            encoder_name=encoder,
            encoder_weights=None,
            classes=num_classes,
            decoder_pyramid_channels=pyramid_channels,
            decoder_segmentation_channels=segmentation_channels,
        )
        super().__init__(num_classes, model, tap_stages)
