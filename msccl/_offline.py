"""Offline-by-default environment: no hub downloads, no W&B network, no albumentations update check."""

import os

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}


def set_offline_defaults() -> None:
    """Set each variable unless the user already did (so `WANDB_MODE=online msccl fit ...` still works)."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
