"""Shared plumbing for networks built on segmentation-models-pytorch (encoder -> decoder -> head).

Tap stages index the encoder's outputs: smp encoders return `depth + 1` maps, the input and then the
stages at strides 2, 4, 8, 16, 32, so stage k has stride 2**k unless the encoder
is dilated (output stride 8 or 16), where strides stop halving. Stage 2 is ResNet's C2 (layer1), stage 5
its C5 (layer4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from segmentation_models_pytorch.encoders import get_encoder
from torch import Tensor, nn

from msccl.models.base import SegmentationNet, Tap, validate_tap_stages
from msccl.models.weights import Pretrained, smp_encoder_state, timm_weight_kwargs

__all__ = ["SmpNet", "build_smp_encoder", "build_with_encoder_weights", "encoder_taps"]


def build_with_encoder_weights(
    build: Callable[..., nn.Module],
    encoder: str,
    pretrained: Pretrained,
    encoder_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Call `build(encoder_weights=..., **timm kwargs)` so the encoder gets its ImageNet weights locally.

    `tu-` (timm) encoders load while timm builds them; native smp encoders load afterwards, strictly, so a
    file that does not fit fails naming the mismatched keys. `encoder_kwargs` go to `timm.create_model`.
    """
    encoder_kwargs = dict(encoder_kwargs or {})
    if encoder.startswith("tu-"):
        weights = timm_weight_kwargs(encoder.removeprefix("tu-"), pretrained)
        load = weights.pop("pretrained")
        return build(encoder_weights=True if load else None, **weights, **encoder_kwargs)
    if encoder_kwargs:
        raise ValueError(
            f"encoder_kwargs {sorted(encoder_kwargs)} apply to timm ('tu-') encoders only, not {encoder!r}"
        )
    state = smp_encoder_state(encoder, pretrained)  # before building: a missing file fails at once
    model = build(encoder_weights=None)
    if state is not None:
        target = model.encoder if hasattr(model, "encoder") else model
        target.load_state_dict(state)
    return model


def build_smp_encoder(
    encoder: str,
    pretrained: Pretrained = False,
    output_stride: int = 32,
    encoder_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """An smp encoder (native or `tu-`) returning the input and the stages at strides 2..32."""

    def build(encoder_weights, **kwargs):
        return get_encoder(encoder, weights=encoder_weights, output_stride=output_stride, **kwargs)

    return build_with_encoder_weights(build, encoder, pretrained, encoder_kwargs)


def encoder_taps(encoder: nn.Module, stages: Sequence[int], setting: str = "tap_stages") -> tuple[Tap, ...]:
    """Channels and strides of the given smp encoder stages; rejects stages that do not exist."""
    channels, output_stride = encoder.out_channels, encoder.output_stride
    stages = validate_tap_stages(stages, [s for s in range(1, len(channels)) if channels[s] > 0], setting)
    return tuple(Tap(channels[s], min(2**s, output_stride)) for s in stages)


class SmpNet(SegmentationNet):
    """Runs an smp model's own flow and keeps the encoder outputs named by `tap_stages` as taps."""

    def __init__(self, num_classes: int, smp_model: nn.Module, tap_stages: Sequence[int]) -> None:
        super().__init__(num_classes)
        self.encoder = smp_model.encoder
        self.decoder = smp_model.decoder
        self.segmentation_head = smp_model.segmentation_head
        self.taps = encoder_taps(self.encoder, tap_stages)
        self.tap_stages = tuple(tap_stages)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        features = self.encoder(x)
        logits = self.segmentation_head(self.decoder(features))
        return logits, None, [features[s] for s in self.tap_stages]
