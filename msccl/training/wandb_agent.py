"""Runs started by a W&B sweep agent report to their sweep.

`wandb agent` starts each trial's command with `WANDB_SWEEP_ID`, the run id, project and entity in its
environment. A trial whose config logs only to CSV (e.g. `conf/synthetic.yaml`, which every file of
`conf/sweeps/` trains) would report nothing to the sweep, so under an agent msccl adds a WandbLogger to
`fit`, `validate` and `test` unless the config has one; `wandb.init` then joins the agent's run, sweep and
project from that environment, in the mode the user set (the `msccl` entry point does not force offline
under an agent). `trainer.logger: false` stays false.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from jsonargparse import Namespace

__all__ = ["SWEEP_LOGGER", "add_sweep_logger"]

SWEEP_LOGGER = "lightning.pytorch.loggers.WandbLogger"


def _class_paths(logger: object) -> list[str]:
    entries = logger if isinstance(logger, list) else [logger]
    return [entry.get("class_path", "") for entry in entries if isinstance(entry, Namespace | dict)]


def add_sweep_logger(trainer: Namespace, environ: Mapping[str, str] = os.environ) -> bool:
    """Add a WandbLogger to `trainer.logger` (a subcommand's trainer config) when a W&B agent started this
    process and the config has none; True if one was added."""
    logger = trainer.logger
    if "WANDB_SWEEP_ID" not in environ or logger is False or SWEEP_LOGGER in _class_paths(logger):
        return False
    existing = [] if logger in (None, True) else logger if isinstance(logger, list) else [logger]
    trainer.logger = [*existing, Namespace(class_path=SWEEP_LOGGER, init_args=Namespace())]
    return True
