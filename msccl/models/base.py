"""The interface every segmentation network in msccl implements.

A network announces its taps (channels, stride of each tapped feature map, highest resolution first) at
construction, so projection heads can be built in `__init__`; its forward returns logits at input
resolution, auxiliary logits where the architecture has them (in training mode only: they serve the
auxiliary loss), and the tapped maps when asked (docs/method.md A1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Tap", "SegmentationOutput", "SegmentationNet", "ForwardTaps", "validate_tap_stages"]


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
    """Base class: subclasses set `self.taps` in `__init__` and implement `forward_features`.

    `presets` names constructor arguments of notable sizes: "paper" (the configuration the paper trains,
    where there is one) and "small" (CPU-sized, used by tests and benchmarks/models.py).
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {"small": {}}
    align_corners: bool = False
    """Bilinear `align_corners` of the upsampling to input size; HRNet and OCRNet make it a setting
    (the official code uses true there)."""

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
        logits = _resize(logits, size, self.align_corners)
        if aux_logits is not None and self.training:
            aux_logits = _resize(aux_logits, size, self.align_corners)
        else:
            aux_logits = None
        return SegmentationOutput(logits, aux_logits, list(taps) if return_taps else [])


def validate_tap_stages(
    stages: Sequence[int], usable: Sequence[int], setting: str = "tap_stages"
) -> tuple[int, ...]:
    """Tap stages must be a non-empty, increasing subset of `usable` (stage k has stride 2**k before any
    dilation), so the taps come highest resolution first."""
    stages = tuple(stages)
    if not stages or any(s not in usable for s in stages) or list(stages) != sorted(set(stages)):
        raise ValueError(
            f"{setting}={list(stages)}: give an increasing subset of this network's stages {list(usable)} "
            "(stage k has stride 2**k; e.g. [2, 4, 5] for ResNet C2/C4/C5)"
        )
    return stages


class ForwardTaps:
    """Keeps the latest output of given submodules via forward hooks, for taps inside a decoder.

    Hooks observe the network's own modules, so no decoder code is copied. The hooks are plain objects
    (not closures), so the network still pickles (ddp_spawn) and deep-copies.
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.outputs: dict[int, Tensor] = {}
        for index, module in enumerate(modules):
            module.register_forward_hook(_KeepOutput(self, index))

    def take(self) -> list[Tensor]:
        """The kept outputs in the order the modules were given; clears them."""
        outputs = [self.outputs[i] for i in sorted(self.outputs)]
        self.outputs = {}
        return outputs


class _KeepOutput:
    def __init__(self, store: ForwardTaps, index: int) -> None:
        self.store, self.index = store, index

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        self.store.outputs[self.index] = output


def _resize(logits: Tensor, size: torch.Size, align_corners: bool) -> Tensor:
    if logits.shape[-2:] == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
