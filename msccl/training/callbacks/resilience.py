"""What keeps a run's weights and its resumption sound: a step whose loss is not finite is skipped
instead of corrupting the weights; the random generators' states travel in checkpoints so that a resumed
run continues exactly; Ctrl-C or SIGTERM stops at the next step boundary with a checkpoint and the
command that resumes it."""

from __future__ import annotations

import os
import random
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

__all__ = ["InterruptCheckpoint", "NonFiniteLossGuard", "RandomStateCheckpoint", "resume_command"]


class NonFiniteLossGuard(Callback):
    """Skips the optimiser step of any batch whose loss is NaN or infinite, leaving no trace of it.

    A skipped step leaves every parameter and every buffer exactly as before the batch. The gradients
    are dropped (set to None) just before the step, so torch's optimisers change no parameter, momentum
    buffer or Adam moment; the buffers (BatchNorm running statistics and batch counts, anything
    registered as a buffer), which the forward already updated, are copied back from a snapshot taken
    before the forward (at the first micro-batch of the step under gradient accumulation). Under DDP the
    decision is taken across ranks (one rank's NaN reaches all ranks' gradients through the all-reduce
    anyway). Each skip is counted, logged as `train/nonfinite_steps` (the running total) and warned
    about. The learning-rate schedule still advances: it follows the step count, as with fp16 loss
    scaling, which skips steps the same way.

    Args:
        max_consecutive: raise after this many non-finite steps in a row (the run has diverged and
            skipping would only waste the allocation); None never raises.
    """

    def __init__(self, max_consecutive: int | None = 20) -> None:
        if max_consecutive is not None and max_consecutive < 1:
            raise ValueError(
                f"nonfinite_loss_guard.max_consecutive must be >= 1 or null, got {max_consecutive}"
            )
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self._nonfinite = False
        self._buffers_before_step: dict[str, torch.Tensor] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        # the forward about to run updates the buffers whatever its loss turns out to be
        if self._buffers_before_step is None:
            self._buffers_before_step = {
                name: buffer.detach().clone() for name, buffer in pl_module.named_buffers()
            }

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        # with gradient accumulation one bad micro-batch spoils the whole step
        self._nonfinite |= not bool(torch.isfinite(loss.detach()).all())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        nonfinite = trainer.strategy.reduce_boolean_decision(self._nonfinite, all=False)
        buffers_before, self._buffers_before_step = self._buffers_before_step, None
        self._nonfinite = False
        if not nonfinite:
            self.consecutive = 0
            return
        optimizer.zero_grad(set_to_none=True)  # torch optimisers leave parameters without gradient alone
        _restore_buffers(pl_module, buffers_before)
        self.skipped += 1
        self.consecutive += 1
        pl_module.log("train/nonfinite_steps", float(self.skipped), on_step=True, on_epoch=False)
        rank_zero_warn(
            f"non-finite loss at step {trainer.global_step}: optimiser step skipped "
            f"({self.skipped} skipped so far, {self.consecutive} in a row)"
        )
        if self.max_consecutive is not None and self.consecutive >= self.max_consecutive:
            raise FloatingPointError(
                f"{self.consecutive} consecutive steps had a non-finite loss: training has diverged "
                "(lower the learning rate, use bf16-mixed instead of 16-mixed, or check the data)"
            )

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = state_dict["skipped"]
        self.consecutive = state_dict["consecutive"]


def _restore_buffers(module: torch.nn.Module, saved: dict[str, torch.Tensor] | None) -> None:
    """Copy `saved` (name -> tensor) back into the module's buffers, in place."""
    if saved is None:
        raise RuntimeError(
            "NonFiniteLossGuard saw an optimiser step without a training batch before it "
            "(manual optimisation is not supported)"
        )
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name in saved:
                buffer.copy_(saved[name])


class RandomStateCheckpoint(Callback):
    """Puts every process's random-generator states (python, numpy, torch, CUDA) in checkpoints and
    restores them when training resumes, just before the first resumed batch.

    Lightning restores weights, optimiser, scheduler, loops and callbacks but not these generators, so
    without this a resumed run draws other dropout masks than the uninterrupted run would have. The
    states are stored as tensors and plain numbers, so `torch.load(weights_only=True)` still reads the
    checkpoint.
    """

    def __init__(self) -> None:
        self._to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = _random_states()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states)  # every rank saves; rank 0's copy is written
            return {"per_rank": gathered}
        return {"per_rank": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict["per_rank"]

    def on_train_start(self, trainer, pl_module) -> None:
        # after the sanity-check validation, which draws from the generators too
        if self._to_restore is None:
            return
        states = self._to_restore
        if len(states) != trainer.world_size:
            # a run started on this many processes seeds them all alike (seed_everything): so does this
            rank_zero_info(
                f"msccl: resuming on {trainer.world_size} processes from a checkpoint of {len(states)}: "
                "every process takes the random state of the checkpoint's rank 0"
            )
        _set_random_states(states[trainer.global_rank] if len(states) == trainer.world_size else states[0])
        self._to_restore = None


def _random_states() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptCheckpoint(Callback):
    """Ctrl-C (SIGINT) or SIGTERM during fit: finish the step, save `last.ckpt`, print how to resume.

    The first signal is only noted. At the end of the optimiser step in progress (never mid-step, nor
    mid-way through gradient accumulation) `last.ckpt` is saved into the run's checkpoints folder (the
    first ModelCheckpoint's, else `<trainer.default_root_dir>/checkpoints`), exactly the checkpoint a
    ModelCheckpoint would save at that step, so resuming from it reaches the weights of an uninterrupted
    run. The command that resumes it is printed (`command` with `--ckpt_path=<that file>`) and the
    process exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal stops
    at once, without saving. Under DDP a signal to any rank stops all of them at the same step.

    What it does not do: a validation in progress finishes first (it cannot be resumed half-way), and a
    signal after the last training step lets the run finish. While training it replaces Lightning's own
    SIGTERM handling (which stops without a checkpoint and exits 0); data-loader workers forked during
    fit (Linux's default start method) ignore both signals, the main process decides. Signal handlers
    exist only in the main thread: elsewhere this callback does nothing.

    Attributes:
        command: the command line that started the run (`msccl`'s CLI sets it); None prints only the
            checkpoint's path.
    """

    def __init__(self) -> None:
        self.command: list[str] | None = None
        self._signal: int | None = None
        self._owner_pid: int | None = None  # set while the handlers are armed
        self._previous_handlers: dict[int, Any] = {}
        self._step_at_batch_start = -1

    # ---- signals ------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        self._signal, self._owner_pid = None, os.getpid()
        self._previous_handlers = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _take_back_sigterm(self) -> None:
        # Lightning installs its SIGTERM handler (wrapping this one) just before the sanity check
        if self._owner_pid is not None:
            signal.signal(signal.SIGTERM, self._on_signal)

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._take_back_sigterm()

    def on_train_start(self, trainer, pl_module) -> None:
        self._take_back_sigterm()

    def disarm(self) -> None:
        """Put back the handlers found at setup wherever this callback's handler is still installed.

        Called at teardown and on an exception, and again by msccl's CLI after the whole run: Lightning's
        own teardown reinstates the handlers it found when training started, which are this callback's.
        """
        self._owner_pid = None
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous_handlers.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._owner_pid is not None and self._signal is not None and trainer.is_global_zero:
            name = signal.Signals(self._signal).name
            print(f"msccl: {name} came after the last training step: the run finished", file=sys.stderr)
        self.disarm()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.disarm()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._owner_pid is None:  # disarmed, yet reinstated by Lightning's teardown: act as before fit
            _call_signal_handler(self._previous_handlers[signum], signum, frame)
        elif os.getpid() != self._owner_pid:  # a data-loader worker forked during fit
            return
        elif self._signal is not None:  # asked twice: stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            _call_signal_handler(signal.SIG_DFL, signum, frame)
        else:
            self._signal = signum
            # os.write, not print: a handler may run while the main program is printing
            os.write(
                2,
                f"\nmsccl: {signal.Signals(signum).name} received: stopping after this step with a "
                "checkpoint (send it again to stop at once, without saving)\n".encode(),
            )

    # ---- the stop -----------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self._step_at_batch_start:
            return  # mid-way through gradient accumulation: not a step boundary
        if not trainer.strategy.reduce_boolean_decision(self._signal is not None, all=False):
            return
        signum = self._signal or signal.SIGTERM  # None: the signal reached another rank
        folders = [getattr(callback, "dirpath", None) for callback in trainer.checkpoint_callbacks]
        folders = [folder for folder in folders if folder]
        folder = Path(folders[0]) if folders else Path(trainer.default_root_dir) / "checkpoints"
        path = folder / "last.ckpt"  # the name `--ckpt_path last` looks for
        before = _file_identity(path)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            written = _file_identity(path) not in (None, before)
            print(self._report(signum, trainer.global_step, path, written), file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    def _report(self, signum: int, step: int, path: Path, written: bool) -> str:
        stopped = f"msccl: stopped by {signal.Signals(signum).name} after step {step}"
        if written:
            head = f"{stopped}; saved {path}"
        elif path.is_file():
            head = f"{stopped}; NOT saved (see the warning above): {path} is from an earlier step"
        else:
            return f"{stopped}; NOT saved (see the warning above): there is no checkpoint to resume from"
        if self.command is None:
            return f"{head}\nresume with ckpt_path={path}"
        return f"{head}\nresume with:\n  {resume_command(self.command, path)}"


def _call_signal_handler(handler: Any, signum: int, frame: Any) -> None:
    """Do what `handler` (a value of `signal.getsignal`) would have done with the signal."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
    # SIG_IGN, or a handler not installed from Python (None): the signal is ignored


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns


def resume_command(command: Sequence[str], checkpoint: Path) -> str:
    """`command` without its `--ckpt_path`, plus `--ckpt_path=<checkpoint>`, quoted for a POSIX shell."""
    kept: list[str] = []
    arguments = iter(command)
    for argument in arguments:
        if argument == "--ckpt_path":
            next(arguments, None)  # and its value
        elif not argument.startswith("--ckpt_path="):
            kept.append(argument)
    return shlex.join([*kept, f"--ckpt_path={checkpoint}"])
