"""msccl: multi-scale and cross-scale supervised contrastive learning for semantic segmentation."""

__version__ = "0.1.0"
