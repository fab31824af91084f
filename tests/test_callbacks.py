from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback

from msccl.cli import build_cli
from msccl.data import SyntheticDataModule
from msccl.models import FPN
from msccl.training import SegmentationModule
from msccl.training.callbacks import NonFiniteLossGuard
from tests.conftest import TINY_SYNTHETIC, quiet_trainer


def _tiny_net(num_classes: int) -> FPN:
    return FPN(num_classes, pyramid_channels=32, segmentation_channels=32)


class NaNLossOnSteps(SegmentationModule):
    """The loss is NaN on the given optimiser steps (as an fp16 overflow or a bad batch would make it)."""

    def __init__(self, nan_steps: tuple[int, ...], **kwargs) -> None:
        super().__init__(_tiny_net, num_classes=4, **kwargs)
        self.nan_steps = nan_steps

    def compute_losses(self, output, labels):
        losses = super().compute_losses(output, labels)
        if self.trainer.global_step in self.nan_steps:
            losses["loss"] = losses["loss"] * float("nan")
        return losses


class ParameterSnapshots(Callback):
    def __init__(self) -> None:
        self.after_step: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after_step[trainer.global_step] = [p.detach().clone() for p in pl_module.parameters()]


def _fit(module: SegmentationModule, max_steps: int, *callbacks: Callback) -> L.Trainer:
    data = SyntheticDataModule(num_classes=4, image_size=32, num_train=16, num_val=2, batch_size=2)
    trainer = quiet_trainer(max_steps=max_steps, limit_val_batches=0, callbacks=list(callbacks))
    trainer.fit(module, data)
    return trainer


def test_a_nonfinite_loss_skips_the_step_logs_it_and_training_goes_on():
    L.seed_everything(0)
    guard, snapshots = NonFiniteLossGuard(), ParameterSnapshots()
    module = NaNLossOnSteps(nan_steps=(1,))
    with pytest.warns(UserWarning, match="non-finite loss at step 1: optimiser step skipped"):
        trainer = _fit(module, 3, guard, snapshots)
    before, at_nan, after = (snapshots.after_step[s] for s in (1, 2, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, at_nan, strict=True))  # the NaN step changed nothing
    assert not all(torch.equal(a, b) for a, b in zip(at_nan, after, strict=True))  # the next one trains
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert guard.skipped == 1 and trainer.callback_metrics["train/nonfinite_steps"].item() == 1.0
    assert guard.state_dict() == {"skipped": 1, "consecutive": 0}


def test_momentum_does_not_carry_a_skipped_step():
    # without the guard a NaN step writes NaN into every weight and momentum buffer
    L.seed_everything(0)
    module = NaNLossOnSteps(nan_steps=(1,))
    _fit(module, 2)
    assert not all(torch.isfinite(p).all() for p in module.parameters())


def test_a_run_that_keeps_diverging_stops_with_a_clear_error():
    module = NaNLossOnSteps(nan_steps=(0, 1, 2, 3))
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError, match="2 consecutive steps"):
        _fit(module, 4, NonFiniteLossGuard(max_consecutive=2))


def test_the_cli_adds_the_guard_and_its_settings_are_config_keys(in_tmp_dir):
    cli = build_cli([*TINY_SYNTHETIC, "--nonfinite_loss_guard.max_consecutive=5"], run=False)
    guards = [c for c in cli.trainer.callbacks if isinstance(c, NonFiniteLossGuard)]
    assert len(guards) == 1 and guards[0].max_consecutive == 5


def test_bf16_mixed_precision_trains_with_finite_losses(in_tmp_dir):
    # bf16 on this CPU is emulated (~40x slower): two steps at 32 px
    args = ["--trainer.precision=bf16-mixed", "--trainer.limit_train_batches=2"]
    cli = build_cli(["fit", *TINY_SYNTHETIC, *args])
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and 0 <= metrics["val/mIoU"].item() <= 1
    assert "train/nonfinite_steps" not in metrics
