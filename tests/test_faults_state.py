"""A bad step leaves no trace, no checkpoint holds a non-finite tensor, and Ctrl-C / SIGTERM stop a run
with a checkpoint that resumes exactly (issue 11, item 3 and the interrupt line)."""

from __future__ import annotations

import copy
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from torch.utils._pytree import keystr, tree_flatten_with_path

from msccl.cli import build_cli
from msccl.data import SyntheticDataModule
from msccl.models import FPN
from msccl.training import SegmentationModule
from msccl.training.callbacks import NonFiniteLossGuard
from msccl.training.checkpoint import AtomicCheckpointIO
from tests.conftest import REPO, TINY_SYNTHETIC, quiet_trainer


def _training_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {
        "parameters": {name: p.detach().clone() for name, p in module.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in module.named_buffers()},
        "optimizer": copy.deepcopy(optimizer.state_dict()["state"]),
    }


def _assert_equal_tensors(expected, actual, where: str = "") -> None:
    """Nested dicts / lists of tensors and numbers are equal, tensors bit for bit."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(expected, actual), where
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys(), where
        for key in expected:
            _assert_equal_tensors(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
            _assert_equal_tensors(a, b, f"{where}.{index}")
    else:
        assert expected == actual, where


class InfPixelAtStep(Callback):
    """Puts one `inf` pixel into the batch of optimiser step `step`; keeps the training state around it."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.before: dict | None = None
        self.after: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["image"][0, :, 16, 16] = float("inf")
            self.before = _training_state(pl_module, trainer.optimizers[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step + 1:
            self.after = _training_state(pl_module, trainer.optimizers[0])


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4),
        lambda params: torch.optim.AdamW(params, lr=1e-3),
    ],
    ids=["sgd", "adamw"],
)
def test_a_batch_with_an_inf_pixel_leaves_parameters_buffers_and_optimiser_exactly_as_before(optimizer):
    torch.manual_seed(0)
    net = lambda num_classes: FPN(num_classes, pyramid_channels=32, segmentation_channels=32)  # noqa: E731
    module = SegmentationModule(net, num_classes=4, optimizer=optimizer)
    data = SyntheticDataModule(num_classes=4, image_size=32, num_train=8, num_val=2, batch_size=2)
    guard, poison = NonFiniteLossGuard(), InfPixelAtStep(step=1)  # step 0 creates the optimiser state
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[guard, poison])
    with pytest.warns(UserWarning, match="non-finite loss at step 1"):
        trainer.fit(module, data)

    assert guard.skipped == 1
    assert any(name.endswith("running_mean") for name in poison.before["buffers"])  # BatchNorm is there
    assert poison.before["optimizer"]  # momentum / Adam moments exist and must not move
    _assert_equal_tensors(poison.before, poison.after)  # num_batches_tracked included
    module.eval()  # evaluation afterwards is finite
    with torch.no_grad():
        logits = module(next(iter(data.val_dataloader()))["image"])
    assert torch.isfinite(logits).all()


QUICK_VALIDATION = ["--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0"]


def _checkpoint_tensors(value) -> list[tuple[str, torch.Tensor]]:
    """(path, tensor) of every tensor in a checkpoint's nested dicts and lists."""
    leaves, _ = tree_flatten_with_path(value)
    return [(keystr(path), leaf) for path, leaf in leaves if isinstance(leaf, torch.Tensor)]


def test_a_diverging_learning_rate_through_the_cli_writes_no_nonfinite_checkpoint(in_tmp_dir):
    # a learning rate that diverges, without warm-up so that it diverges within TINY's three steps: the
    # weights blow up (finite), the next forward fills BatchNorm's running statistics with NaN
    lr = ["--model.init_args.optimizer.init_args.lr=1e6", "--model.init_args.warmup_steps=0"]
    with pytest.warns(UserWarning, match="optimiser step skipped"):
        cli = build_cli(["fit", *TINY_SYNTHETIC, *lr, *QUICK_VALIDATION, "--run_dir=run"])
    assert cli.trainer.callback_metrics["train/nonfinite_steps"] >= 1
    checkpoints = sorted((in_tmp_dir / "run" / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2 and checkpoints[-1].name == "last.ckpt"  # the best and the last
    for path in checkpoints:
        checkpoint = torch.load(path, weights_only=False)
        for key in ("state_dict", "optimizer_states"):
            bad = [name for name, t in _checkpoint_tensors(checkpoint[key]) if not torch.isfinite(t).all()]
            assert not bad, f"{path.name}: {bad}"


def test_a_checkpoint_with_a_nonfinite_tensor_is_not_written_and_the_last_good_one_stays(tmp_path):
    io = AtomicCheckpointIO()
    good, best = tmp_path / "last.ckpt", tmp_path / "best.ckpt"
    io.save_checkpoint(
        {"state_dict": {"w": torch.ones(2)}, "callbacks": {"kth": torch.tensor(-torch.inf)}}, good
    )
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, best)
    poisoned = {
        "state_dict": {"w": torch.ones(2), "bn.running_var": torch.tensor([1.0, torch.nan])},
        "optimizer_states": [{"state": {0: {"momentum_buffer": torch.tensor([torch.inf])}}}],
    }
    with pytest.warns(UserWarning, match=r"last.ckpt not written: 2 tensors are not finite \(state_dict"):
        io.save_checkpoint(poisoned, good)
    # ModelCheckpoint deletes the file the new one replaces right after saving it: not after a refusal
    with pytest.warns(UserWarning, match="kept .*best.ckpt"):
        io.remove_checkpoint(best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary file
    assert torch.equal(torch.load(good, weights_only=True)["state_dict"]["w"], torch.ones(2))
    with pytest.warns(UserWarning, match="1 tensors are not finite"):  # a NaN score in a callback
        io.save_checkpoint({"callbacks": {"score": torch.tensor(torch.nan)}}, good)
    io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, good)
    io.remove_checkpoint(best)
    assert not best.exists() and torch.equal(
        torch.load(good, weights_only=True)["state_dict"]["w"], torch.zeros(2)
    )


# ---- Ctrl-C / SIGTERM ---------------------------------------------------------------------------------


class SignalAtStep(Callback):
    """Sends `signal_name` to this very process after optimiser step `step`, as Ctrl-C would."""

    def __init__(self, step: int, signal_name: str) -> None:
        self.step, self.signal_name = step, signal_name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal_name))


class PauseAtStep(Callback):
    """After optimiser step `step`, writes `<folder>/training` and waits for `<folder>/go` (at most 120 s),
    so that a test can signal the process at a known point of training however slow the machine."""

    def __init__(self, step: int, folder: str) -> None:
        self.step, self.folder = step, Path(folder)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        (self.folder / "training").touch()
        deadline = time.monotonic() + 120
        while not (self.folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


# two optimiser steps, the signal after the first; one validation batch at the end
SHORT = [
    *TINY_SYNTHETIC,
    "--trainer.limit_train_batches=2",
    *QUICK_VALIDATION,
]


def _resume_command(stderr: str) -> list[str]:
    """The arguments of the printed resume command (after `msccl`)."""
    lines = stderr.splitlines()
    command = shlex.split(lines[lines.index("resume with:") + 1])
    assert command[:2] == ["msccl", "fit"]
    return command[1:]


def _assert_resumed_exactly(expected: dict, run: Path) -> None:
    actual = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert actual["global_step"] == expected["global_step"] == 2
    _assert_equal_tensors(expected["state_dict"], actual["state_dict"])
    _assert_equal_tensors(expected["optimizer_states"], actual["optimizer_states"])
    assert actual["lr_schedulers"] == expected["lr_schedulers"]


def test_ctrl_c_saves_at_the_step_boundary_exits_130_and_prints_the_resume_command(
    tmp_path, capfd, default_sigint
):
    # resuming from this checkpoint is checked with SIGTERM below: the save is the same
    run = tmp_path / "run"
    interrupt = [f"--trainer.callbacks+={__name__}.SignalAtStep", "--trainer.callbacks.step=1"]
    args = ["fit", *SHORT, *interrupt, "--trainer.callbacks.signal_name=SIGINT", f"--run_dir={run}"]
    with pytest.raises(SystemExit) as stopped:
        build_cli(args)
    assert stopped.value.code == 130
    saved = (run / "checkpoints" / "last.ckpt").resolve()
    assert torch.load(saved, weights_only=False)["global_step"] == 1
    stderr = capfd.readouterr().err
    assert f"msccl: stopped by SIGINT after step 1; saved {saved}" in stderr
    assert _resume_command(stderr) == [*args, f"--ckpt_path={saved}"]
    with pytest.raises(KeyboardInterrupt):  # after fit, Ctrl-C interrupts at once again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)


def test_sigterm_to_msccl_fit_saves_exits_143_and_the_printed_command_resumes_exactly(in_tmp_dir):
    pause = ["--trainer.callbacks+=tests.test_faults_state.PauseAtStep", "--trainer.callbacks.step=1"]
    command = [
        sys.executable,
        "-m",
        "msccl",
        "fit",
        *SHORT,
        *pause,
        f"--trainer.callbacks.folder={in_tmp_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # same threads as this process: same float sums
    process = subprocess.Popen(
        command, cwd=in_tmp_dir, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        while not (in_tmp_dir / "training").exists() and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        (in_tmp_dir / "go").touch()
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr[-2000:]
    run = in_tmp_dir / "runs" / "synthetic" / "version_0"
    assert "msccl: stopped by SIGTERM after step 1; saved" in stderr
    resume = _resume_command(stderr)
    saved = (run / "checkpoints" / "last.ckpt").resolve()
    assert resume == [
        "fit",
        *SHORT,
        *pause,
        f"--trainer.callbacks.folder={in_tmp_dir}",
        f"--ckpt_path={saved}",
    ]

    build_cli(resume)  # in this process: the same command, without paying for the imports again
    assert not (run.parent / "version_1").exists()
    build_cli(["fit", *SHORT, "--run_dir=uninterrupted"])
    expected = torch.load(in_tmp_dir / "uninterrupted" / "checkpoints" / "last.ckpt", weights_only=False)
    _assert_resumed_exactly(expected, run)


class FailAtStep(Callback):
    """Raises a plain error once optimiser step `step` is done, as a broken callback or data would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"failed at step {self.step}")


def test_after_a_fit_that_failed_mid_training_ctrl_c_interrupts_at_once(tmp_path, default_sigint):
    handler = signal.getsignal(signal.SIGINT)
    failing = [f"--trainer.callbacks+={__name__}.FailAtStep", "--trainer.callbacks.step=1"]
    with pytest.raises(RuntimeError, match="failed at step 1"):
        build_cli(["fit", *SHORT, *failing, f"--run_dir={tmp_path / 'run'}"])
    assert signal.getsignal(signal.SIGINT) is handler  # the dead run's handler is gone
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
