"""The contrastive weight's schedule: a delayed, ramped weight that resumes exactly from a checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch import Callback

__all__ = ["ContrastiveWeightSchedule"]


class ContrastiveWeightSchedule(Callback):
    """Delays and ramps the contrastive weight (docs/method.md B7); the paper's weight is constant.

    The module's effective weight is `contrastive_weight x factor`, with factor 0 before `start_step`,
    rising linearly to 1 over `ramp_steps` optimiser steps, then 1. The factor is a function of the
    global step, so resuming from a checkpoint continues the schedule exactly; the schedule's settings
    travel in the checkpoint and a resume with different settings is refused rather than silently mixed.
    """

    def __init__(self, start_step: int = 0, ramp_steps: int = 0) -> None:
        if start_step < 0 or ramp_steps < 0:
            raise ValueError(f"start_step and ramp_steps must be >= 0, got {start_step}, {ramp_steps}")
        self.start_step = start_step
        self.ramp_steps = ramp_steps

    def factor(self, step: int) -> float:
        if step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return 1.0
        return min(1.0, (step - self.start_step + 1) / self.ramp_steps)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int):
        pl_module.contrastive_weight_factor = self.factor(trainer.global_step)
        pl_module.log("train/contrastive_weight", pl_module.effective_contrastive_weight, batch_size=1)

    def state_dict(self) -> dict[str, int]:
        return {"start_step": self.start_step, "ramp_steps": self.ramp_steps}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        saved = (state_dict["start_step"], state_dict["ramp_steps"])
        if saved != (self.start_step, self.ramp_steps):
            raise ValueError(
                f"the checkpoint's contrastive schedule (start_step, ramp_steps) = {saved} differs from "
                f"this run's {(self.start_step, self.ramp_steps)}: resume with the same settings"
            )
