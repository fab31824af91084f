"""DeepLabV3 (Chen et al., 2017) and DeepLabV3+ (Chen et al., 2018) from segmentation-models-pytorch."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling
from torch import Tensor, nn

from msccl.models._smp import SmpNet, build_with_encoder_weights
from msccl.models.registry import register
from msccl.models.weights import Pretrained

__all__ = ["DeepLabV3", "DeepLabV3Plus"]

_ATROUS_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}  # the DeepLabV3 paper's rates per output stride


class _AtrousNet(SmpNet):
    """An smp DeepLab: ASPP over a dilated encoder; explains the batch-of-one failure of its pooling."""

    def __init__(
        self,
        num_classes: int,
        smp_class: type[nn.Module],
        encoder: str,
        pretrained: Pretrained,
        output_stride: int,
        decoder_channels: int,
        atrous_rates: Sequence[int] | None,
        tap_stages: Sequence[int],
        encoder_kwargs: dict[str, Any] | None,
    ) -> None:
        if output_stride not in _ATROUS_RATES:
            raise ValueError(f"output_stride={output_stride}: DeepLab supports 8 or 16")
        build = partial(
            smp_class,
            encoder_name=encoder,
            classes=num_classes,
            encoder_output_stride=output_stride,
            decoder_channels=decoder_channels,
            decoder_atrous_rates=tuple(atrous_rates or _ATROUS_RATES[output_stride]),
        )
        model = build_with_encoder_weights(build, encoder, pretrained, encoder_kwargs)
        super().__init__(num_classes, model, tap_stages)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        if self.training and x.shape[0] == 1 and self._pooling_uses_local_batchnorm():
            raise ValueError(
                f"{type(self).__name__}: the ASPP image-pooling branch applies BatchNorm to one value per "
                "channel and image, so training needs at least 2 images per device (got a batch of 1). "
                "Raise data.init_args.batch_size, or use several devices with trainer.sync_batchnorm=true."
            )
        return super().forward_features(x)

    def _pooling_uses_local_batchnorm(self) -> bool:
        pooling = [m for m in self.decoder.modules() if isinstance(m, ASPPPooling)]
        return any(type(norm) is nn.BatchNorm2d for branch in pooling for norm in branch)


@register
class DeepLabV3(_AtrousNet):
    """DeepLabV3: ASPP on a dilated encoder (output stride 8 by default), logits upsampled from stride 8.

    Taps: the outputs of encoder stages 2, 4 and 5 by default (C2, C4, C5 in ResNet notation: 256/1024/2048
    channels at strides 4/8/8 for ResNet-50/101; docs/method.md A1); any increasing subset of stages 1..5,
    e.g. [2, 5].

    Args:
        encoder: smp encoder (resnet50, resnet101, ...) or timm encoder with the `tu-` prefix.
        pretrained: ImageNet weights: False, True (local cache), or a weights file (msccl.models.weights).
        output_stride: 8 or 16.
        decoder_channels: ASPP width.
        atrous_rates: ASPP dilation rates; None: (12, 24, 36) at output stride 8, (6, 12, 18) at 16.
        tap_stages: encoder stages to tap (stage k has stride 2**k before dilation).
        encoder_kwargs: extra `timm.create_model` arguments for `tu-` encoders (e.g. drop_path_rate).
    """

    presets = {
        "paper": {"encoder": "resnet101"},
        "small": {"encoder": "resnet18", "decoder_channels": 64},
    }

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet50",
        pretrained: Pretrained = False,
        output_stride: int = 8,
        decoder_channels: int = 256,
        atrous_rates: Sequence[int] | None = None,
        tap_stages: Sequence[int] = (2, 4, 5),
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            num_classes,
            smp.DeepLabV3,
            encoder,
            pretrained,
            output_stride,
            decoder_channels,
            atrous_rates,
            tap_stages,
            encoder_kwargs,
        )


@register
class DeepLabV3Plus(_AtrousNet):
    """DeepLabV3+: DeepLabV3 with a stride-4 decoder (output stride 16 by default).

    Taps: encoder stages 2, 3, 4, 5 by default (strides 4/8/16/16 at output stride 16).
    Arguments as for DeepLabV3.
    """

    presets = {"small": {"encoder": "resnet18", "decoder_channels": 64}}

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet50",
        pretrained: Pretrained = False,
        output_stride: int = 16,
        decoder_channels: int = 256,
        atrous_rates: Sequence[int] | None = None,
        tap_stages: Sequence[int] = (2, 3, 4, 5),
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            num_classes,
            smp.DeepLabV3Plus,
            encoder,
            pretrained,
            output_stride,
            decoder_channels,
            atrous_rates,
            tap_stages,
            encoder_kwargs,
        )
