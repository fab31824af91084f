"""The label convention every layer shares: train ids 0..K-1 for the classes, one ignore id.

A leaf module (it imports nothing from msccl), so that datasets, transforms, losses and metrics all take
the ignore id from here without importing each other.
"""

__all__ = ["IGNORE_INDEX"]

IGNORE_INDEX = 255
"""The one ignore id: labels travel as train ids with 255 = ignore, from the dataset file to the loss."""
