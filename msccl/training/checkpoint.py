"""Checkpoint files that are never half-written nor poisoned: a killed or diverged job keeps its last good
checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.rank_zero import rank_zero_warn

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file in the same folder, flushes it to disk, then renames it over the target.

    A rename within one file system is atomic, so `last.ckpt` is at every moment either the previous or
    the new complete checkpoint. (Lightning's default writes through an fsspec transaction whose temporary
    file lives in the system temp folder: moving it onto another file system, e.g. a cluster's shared
    disk, is a copy that a kill can interrupt.) Remote paths (`s3://...`) use Lightning's default.

    A checkpoint holding a NaN or infinite tensor (weights, buffers, optimiser state, or a NaN in the
    callbacks' states, where an infinity means "no score yet") is not written: a warning names the
    tensors and the previous file stays, as does the one that `ModelCheckpoint` would delete right after
    saving its replacement.
    """

    _refused_last_save = False

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        nonfinite = _nonfinite_tensors(checkpoint)
        self._refused_last_save = bool(nonfinite)
        if nonfinite:
            more = ", ..." if len(nonfinite) > 3 else ""
            rank_zero_warn(
                f"checkpoint {path} not written: {len(nonfinite)} tensors are not finite "
                f"({', '.join(nonfinite[:3])}{more}); any earlier file there is kept"
            )
            return None
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a run killed while saving
            stale.unlink(missing_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_directory(path.parent)

    def remove_checkpoint(self, path) -> None:
        if self._refused_last_save:  # ModelCheckpoint removes the file the refused one was to replace
            rank_zero_warn(f"kept {path}: the checkpoint meant to replace it was not written")
            return
        super().remove_checkpoint(path)


def _nonfinite_tensors(checkpoint: dict[str, Any]) -> list[str]:
    """Dotted keys of the tensors a checkpoint must not hold: NaN or infinite anywhere, except that the
    callbacks' states may hold an infinity (ModelCheckpoint's and EarlyStopping's "no score yet")."""
    found = []
    for key, value in checkpoint.items():
        is_bad = torch.isnan if key == "callbacks" else _not_finite
        found += [name for name, tensor in _floating_tensors(value, str(key)) if bool(is_bad(tensor).any())]
    return found


def _not_finite(tensor: torch.Tensor) -> torch.Tensor:
    return ~torch.isfinite(tensor)


def _floating_tensors(value: Any, key: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted key, tensor) of every floating-point or complex tensor in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _floating_tensors(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _floating_tensors(item, f"{key}.{index}")


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
