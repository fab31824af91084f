"""Shared plumbing for networks built on a segmentation-models-pytorch model (encoder -> decoder -> head)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from msccl.models.base import SegmentationNet, Tap


class SmpNet(SegmentationNet):
    """Runs an smp model's own flow and keeps the encoder outputs named by `tap_stages` as taps.

    smp encoders return `depth + 1` maps: the input, then strides 2, 4, 8, ... (../shared/docs/env.md);
    `tap_stages` indexes that list (2 = stride 4, 5 = stride 32 for a depth-5 encoder).
    """

    def __init__(self, num_classes: int, smp_model: nn.Module, tap_stages: Sequence[int]) -> None:
        super().__init__(num_classes)
        self.encoder = smp_model.encoder
        self.decoder = smp_model.decoder
        self.segmentation_head = smp_model.segmentation_head
        channels = self.encoder.out_channels
        strides = _encoder_strides(self.encoder)
        bad = [s for s in tap_stages if not 0 < s < len(channels)]
        if bad:
            raise ValueError(f"tap_stages {list(tap_stages)} out of range 1..{len(channels) - 1}")
        self.tap_stages = tuple(tap_stages)
        self.taps = tuple(Tap(channels[s], strides[s]) for s in self.tap_stages)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        features = self.encoder(x)
        logits = self.segmentation_head(self.decoder(features))
        return logits, None, [features[s] for s in self.tap_stages]


def _encoder_strides(encoder: nn.Module) -> list[int]:
    """Stride of each encoder output; dilated (output-stride 8/16) encoders stop halving."""
    output_stride = getattr(encoder, "_output_stride", 32)
    return [min(2**i, output_stride) for i in range(len(encoder.out_channels))]
