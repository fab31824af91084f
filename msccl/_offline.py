"""Offline defaults of the `msccl` command: no hub downloads, no W&B network, no albumentations update check.

Only the entry point applies them (`msccl`, `python -m msccl`): importing msccl as a library changes nothing
in the caller's environment. A value the user set always wins, and under a W&B sweep agent (which sets
`WANDB_SWEEP_ID` and friends) W&B keeps the agent's mode, so every trial reports to its sweep.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["OFFLINE_DEFAULTS", "WANDB_AGENT_VARIABLES", "set_offline_defaults"]

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}

WANDB_AGENT_VARIABLES = ("WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH")
"""Set by `wandb agent` in each trial's environment: W&B is then left in the agent's mode."""


def set_offline_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set each default in `environ` (default: os.environ) unless it is already set; WANDB_MODE is left
    alone under a W&B agent. Call it before importing huggingface_hub, wandb or albumentations (they read
    these at import)."""
    environ = os.environ if environ is None else environ
    under_agent = any(name in environ for name in WANDB_AGENT_VARIABLES)
    for key, value in OFFLINE_DEFAULTS.items():
        if key == "WANDB_MODE" and under_agent:
            continue
        environ.setdefault(key, value)
