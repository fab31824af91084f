"""What a contrastive loss tells the training module about its inputs (docs/contrastive-loss.md).

The module builds the projection heads from ``projection_channels`` of the network's taps, feeds them
``projection_inputs(taps)``, and passes ``predictions=`` (the argmax of the logits, at input size) to the
loss when ``needs_predictions`` is true. Defaults: one head per tap, no predictions (the MS + CS loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

__all__ = ["SegmentationContrastiveLoss"]


class SegmentationContrastiveLoss(nn.Module):
    """Base class of the losses a ``contrastive:`` setting selects."""

    needs_predictions: ClassVar[bool] = False

    def projection_channels(self, tap_channels: Sequence[int]) -> list[int]:
        """Input channels of the projection heads, one per map ``projection_inputs`` returns."""
        return list(tap_channels)

    def projection_inputs(self, taps: Sequence[Tensor]) -> list[Tensor]:
        """The maps to project, from the network's taps (highest resolution first)."""
        return list(taps)

    def validate_setup(self, num_taps: int, projection_dim: int) -> None:
        """Raise ValueError now, at construction, if the loss cannot work with ``num_taps`` taps projected
        to ``projection_dim`` channels."""
