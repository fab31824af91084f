"""SegFormer (Xie et al., 2021) from segmentation-models-pytorch: MiT encoder + all-MLP decoder."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import segmentation_models_pytorch as smp

from msccl.models._smp import SmpNet, build_with_encoder_weights
from msccl.models.registry import register
from msccl.models.weights import Pretrained

__all__ = ["Segformer"]


@register
class Segformer(SmpNet):
    """smp SegFormer; taps the encoder stages (MiT-B0: 32/64/160/256 channels at strides 4-32).

    Args:
        encoder: mit_b0 ... mit_b5, or another smp / `tu-` encoder.
        pretrained: ImageNet weights: False, True (local cache), or a weights file (msccl.models.weights).
        decoder_channels: width of the MLP decoder.
        tap_stages: encoder stages to tap (stage k has stride 2**k).
        encoder_kwargs: extra `timm.create_model` arguments for `tu-` encoders.
    """

    presets = {"small": {"encoder": "mit_b0", "decoder_channels": 64}}

    def __init__(
        self,
        num_classes: int,
        encoder: str = "mit_b0",
        pretrained: Pretrained = False,
        decoder_channels: int = 256,
        tap_stages: Sequence[int] = (2, 3, 4, 5),
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        build = partial(
            smp.Segformer,
            encoder_name=encoder,
            classes=num_classes,
            decoder_segmentation_channels=decoder_channels,
        )
        super().__init__(
            num_classes, build_with_encoder_weights(build, encoder, pretrained, encoder_kwargs), tap_stages
        )
