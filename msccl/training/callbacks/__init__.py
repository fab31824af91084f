"""Cross-cutting training behaviour as Lightning callbacks (the module keeps the science), by concern:
`schedule` (the contrastive weight's schedule), `resilience` (non-finite steps, random states, stops on
a signal) and `reporting` (validation images and evaluation pictures).

`ContrastiveWeightSchedule` is configured where wanted. `msccl` adds the other five to every run
(config keys `nonfinite_loss_guard`, `random_state_checkpoint`, `interrupt_checkpoint`,
`wandb_validation_images` and `evaluation_figures`): a step whose loss is not finite is skipped instead
of corrupting the weights; the random generators' states travel in checkpoints so a resumed run
continues exactly; Ctrl-C or SIGTERM stops at the next step with a checkpoint and the command that
resumes it; a few validation images with predicted and true masks go to W&B when a WandbLogger is
configured; and every evaluation leaves its confusion matrix and per-class IoU as pictures in the run
directory. The names are re-exported here, so `msccl.training.callbacks.NAME` class paths keep working.
"""

from msccl.training.callbacks.reporting import EvaluationFigures, WandbValidationImages
from msccl.training.callbacks.resilience import InterruptCheckpoint, NonFiniteLossGuard, RandomStateCheckpoint
from msccl.training.callbacks.schedule import ContrastiveWeightSchedule

__all__ = [
    "ContrastiveWeightSchedule",
    "EvaluationFigures",
    "InterruptCheckpoint",
    "NonFiniteLossGuard",
    "RandomStateCheckpoint",
    "WandbValidationImages",
]
