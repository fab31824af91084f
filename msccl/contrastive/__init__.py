"""Multi-scale and cross-scale supervised contrastive loss for segmentation (docs/method.md A, B), and
the pixel-contrast baseline it is compared with (PixelContrastLoss, docs/method.md P).

Depends on torch only, so the loss can be dropped into any training loop::

    from msccl.contrastive import MSCSContrastiveLoss, ProjectionHeads

    heads = ProjectionHeads([48, 96, 192, 384])
    loss_fn = MSCSContrastiveLoss(num_classes=19)
    loss, terms = loss_fn(heads(taps), labels)  # taps: [B, C_s, h_s, w_s], highest resolution first
"""

from msccl.contrastive.base import SegmentationContrastiveLoss
from msccl.contrastive.heads import ProjectionHead, ProjectionHeads
from msccl.contrastive.infonce import infonce
from msccl.contrastive.loss import PAPER_SCALE_WEIGHTS, MSCSContrastiveLoss
from msccl.contrastive.memory import PixelSegmentMemory
from msccl.contrastive.pixel_contrast import PixelContrastLoss, pixel_contrast_loss, sample_hard_anchors
from msccl.contrastive.sampling import (
    ClassBalancedSample,
    check_labels,
    downsample_labels,
    sample_class_balanced,
    views_per_pair,
)

__all__ = [
    "PAPER_SCALE_WEIGHTS",
    "ClassBalancedSample",
    "MSCSContrastiveLoss",
    "PixelContrastLoss",
    "PixelSegmentMemory",
    "ProjectionHead",
    "ProjectionHeads",
    "SegmentationContrastiveLoss",
    "check_labels",
    "downsample_labels",
    "infonce",
    "pixel_contrast_loss",
    "sample_class_balanced",
    "sample_hard_anchors",
    "views_per_pair",
]
