"""msccl: multi-scale and cross-scale supervised contrastive learning for semantic segmentation."""

from msccl._offline import set_offline_defaults

# Before any submodule imports albumentations / huggingface_hub / wandb: they read these at import.
set_offline_defaults()

__version__ = "0.1.0"
