"""The interface every segmentation network in msccl implements.

A network announces its taps (channels, stride of each tapped feature map, highest resolution first) at
construction, so projection heads can be built in `__init__`; its forward returns logits at input
resolution, auxiliary logits where the architecture has them, and the tapped maps when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Tap", "SegmentationOutput", "SegmentationNet"]


@dataclass(frozen=True)
class Tap:
    """One tapped feature map: its channel count and its stride relative to the input."""

    channels: int
    stride: int


@dataclass
class SegmentationOutput:
    logits: Tensor
    aux_logits: Tensor | None = None
    taps: list[Tensor] = field(default_factory=list)


class SegmentationNet(nn.Module):
    """Base class: subclasses set `self.taps` in `__init__` and implement `forward_features`."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.taps: tuple[Tap, ...] = ()

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """Return (logits, aux logits or None, tapped maps) at the network's own output strides."""
        raise NotImplementedError

    def forward(self, x: Tensor, return_taps: bool = False) -> SegmentationOutput:
        logits, aux_logits, taps = self.forward_features(x)
        size = x.shape[-2:]
        logits = _resize(logits, size)
        if aux_logits is not None:
            aux_logits = _resize(aux_logits, size)
        return SegmentationOutput(logits, aux_logits, list(taps) if return_taps else [])

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Logits at input size only: the inference/export path (no taps, no auxiliary head)."""
        return self.forward(x).logits


def _resize(logits: Tensor, size: torch.Size) -> Tensor:
    if logits.shape[-2:] == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
