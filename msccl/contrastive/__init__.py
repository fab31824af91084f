"""Multi-scale and cross-scale supervised contrastive loss for segmentation (docs/method.md A, B).

Depends on torch only, so the loss can be dropped into any training loop::

    from msccl.contrastive import MSCSContrastiveLoss, ProjectionHeads

    heads = ProjectionHeads([48, 96, 192, 384])
    loss_fn = MSCSContrastiveLoss(num_classes=19)
    loss, terms = loss_fn(heads(taps), labels)  # taps: [B, C_s, h_s, w_s], highest resolution first
"""

from msccl.contrastive.heads import ProjectionHead, ProjectionHeads
from msccl.contrastive.infonce import infonce
from msccl.contrastive.loss import PAPER_SCALE_WEIGHTS, MSCSContrastiveLoss
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
    "ProjectionHead",
    "ProjectionHeads",
    "check_labels",
    "downsample_labels",
    "infonce",
    "sample_class_balanced",
    "views_per_pair",
]
