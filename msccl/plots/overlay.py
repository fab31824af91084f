"""Label maps drawn over their images: each pixel's class colour blended into the picture.

NumPy alone (no matplotlib), so `msccl predict` and `msccl.Segmenter.overlay` draw without the `plots`
extra; `msccl data browse` draws its sample grids with the same blend.
"""

from __future__ import annotations

import numpy as np

__all__ = ["colourise", "overlay"]


def colourise(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a train-id map [H, W] with one palette row [C, 3] per class."""
    return palette[label]


def overlay(image: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with each pixel's class colour blended in (`alpha` = weight of the colour)."""
    blended = alpha * colourise(label, palette).astype(np.float32) + (1 - alpha) * image.astype(np.float32)
    return blended.round().astype(np.uint8)
