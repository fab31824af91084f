"""U-Net (Ronneberger et al., 2015) from segmentation-models-pytorch, over any smp / timm encoder."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import segmentation_models_pytorch as smp

from msccl.models._smp import SmpNet, build_with_encoder_weights
from msccl.models.registry import register
from msccl.models.weights import Pretrained

__all__ = ["Unet"]


@register
class Unet(SmpNet):
    """smp U-Net; taps the encoder stages (strides 4-32 by default).

    Args:
        encoder: smp encoder name, or a timm one with the `tu-` prefix.
        pretrained: ImageNet weights: False, True (local cache), or a weights file (msccl.models.weights).
        decoder_channels: widths of the five decoder blocks, lowest resolution first.
        tap_stages: encoder stages to tap (stage k has stride 2**k).
        encoder_kwargs: extra `timm.create_model` arguments for `tu-` encoders.
    """

    presets = {"small": {"encoder": "resnet18", "decoder_channels": (64, 32, 16, 16, 16)}}

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet34",
        pretrained: Pretrained = False,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        tap_stages: Sequence[int] = (2, 3, 4, 5),
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        build = partial(
            smp.Unet, encoder_name=encoder, classes=num_classes, decoder_channels=tuple(decoder_channels)
        )
        super().__init__(
            num_classes, build_with_encoder_weights(build, encoder, pretrained, encoder_kwargs), tap_stages
        )
