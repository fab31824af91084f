"""UPerNet (Xiao et al., 2018): PPM + FPN over ResNet, ConvNeXt or Swin, from segmentation-models-pytorch."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import segmentation_models_pytorch as smp
from torch import Tensor

from msccl.models._heads import ConvHead
from msccl.models._smp import SmpNet, build_with_encoder_weights, encoder_taps
from msccl.models.base import ForwardTaps, Tap
from msccl.models.registry import register
from msccl.models.weights import Pretrained

__all__ = ["UPerNet"]


@register
class UPerNet(SmpNet):
    """UPerNet with the auxiliary FCN head of mmsegmentation's recipe on the stride-16 backbone stage.

    Taps, chosen by `tap_position` (docs/method.md A1):
    - "fpn" (paper): the outputs of FPN levels 2..5 before the fusion concat (decoder_channels each,
      strides 4/8/16/32), read by forward hooks on smp's decoder modules (level 5 is the pyramid-pooling
      output);
    - "backbone": the encoder stages themselves.
    `tap_stages` picks the levels (stage k has stride 2**k).

    Swin needs its training crop as `encoder_kwargs: {img_size: 512}` (timm fixes the patch grid);
    smp turns its NHWC features into NCHW. The paper's Swin-T recipe also sets drop_path_rate 0.3.

    Args:
        encoder: smp encoder (resnet50, ...) or timm encoder with `tu-` (tu-convnext_tiny,
            tu-swin_tiny_patch4_window7_224, ...).
        pretrained: ImageNet weights: False, True (local cache), or a weights file (msccl.models.weights).
        decoder_channels: PPM / FPN width (512 in the paper's mmsegmentation configs).
        tap_position: "fpn" or "backbone".
        tap_stages: levels to tap, an increasing subset of 2..5.
        aux_stage: encoder stage of the auxiliary FCN head (4 = stride 16, mmsegmentation's; the authors'
            Swin recipe uses 5 = stride 32, Swin-T's 768 channels); None: no auxiliary head.
        aux_channels: width of the auxiliary head.
        encoder_kwargs: extra `timm.create_model` arguments for `tu-` encoders.
    """

    presets = {
        "paper": {
            "encoder": "tu-swin_tiny_patch4_window7_224",
            "encoder_kwargs": {"img_size": 512, "drop_path_rate": 0.3},
        },
        "small": {"encoder": "resnet18", "decoder_channels": 64, "aux_channels": 64},
    }

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet50",
        pretrained: Pretrained = False,
        decoder_channels: int = 512,
        tap_position: Literal["fpn", "backbone"] = "fpn",
        tap_stages: Sequence[int] = (2, 3, 4, 5),
        aux_stage: int | None = 4,
        aux_channels: int = 256,
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        build = partial(
            smp.UPerNet, encoder_name=encoder, classes=num_classes, decoder_channels=decoder_channels
        )
        model = build_with_encoder_weights(build, encoder, pretrained, encoder_kwargs)
        super().__init__(num_classes, model, tap_stages)
        if tap_position not in ("fpn", "backbone"):
            raise ValueError(f"tap_position={tap_position!r}: choose 'fpn' or 'backbone'")
        self.tap_position = tap_position
        self.fpn_taps: ForwardTaps | None = None
        if tap_position == "fpn":
            if not set(self.tap_stages) <= {2, 3, 4, 5}:
                raise ValueError(f"tap_stages={list(tap_stages)}: the FPN has levels 2..5")
            # smp's lateral/conv blocks run from stride 16 down to 4; level 5 is the pyramid pooling output
            levels = {5: self.decoder.psp} | dict(zip((4, 3, 2), self.decoder.fpn_conv_blocks, strict=True))
            self.fpn_taps = ForwardTaps(levels[s] for s in self.tap_stages)
            self.taps = tuple(Tap(decoder_channels, tap.stride) for tap in self.taps)
        self.aux_stage = aux_stage
        self.aux_head = None
        if aux_stage is not None:
            (aux_tap,) = encoder_taps(self.encoder, [aux_stage], setting="aux_stage")
            aux_in = aux_tap.channels
            self.aux_head = ConvHead(aux_in, aux_channels, num_classes, kernel_size=3, dropout=0.1)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        features = self.encoder(x)
        logits = self.segmentation_head(self.decoder(features))
        if self.fpn_taps is not None:
            taps = self.fpn_taps.take()
        else:
            taps = [features[s] for s in self.tap_stages]
        aux_logits = None
        if self.aux_head is not None and self.training:  # the auxiliary CE only exists in training
            aux_logits = self.aux_head(features[self.aux_stage])
        return logits, aux_logits, taps
