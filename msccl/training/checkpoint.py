"""Checkpoint files that are never half-written nor poisoned, carry their own digest, and are checked when
loaded.

A killed or diverged job keeps its last good checkpoint (atomic rename; no checkpoint with a non-finite
tensor is written). Each checkpoint also holds a SHA-256 digest of its own bytes, so a file altered or
damaged after it was written is refused with one line instead of loading (torch's zip reader does not
check its CRCs): `load_checkpoint` / `verify_checkpoint`.

The digest is the zip file's comment, written with the zip's end record as the file's last bytes: torch's
end record is held back while torch writes, so until the seal is on disk the file has no end record and
is no zip at all. Every state a killed save can leave is a prefix of the sealed file, and none of them
loads (`verify_checkpoint` refuses each): there is no complete checkpoint without its digest.

A full disk is a `DiskFullError`: one line naming the file system and the space needed, the previous
checkpoint untouched; a save that cannot fit beside the largest checkpoint already there is refused before
anything is written.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import shutil
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.rank_zero import rank_zero_warn

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "DiskFullError",
    "load_checkpoint",
    "save_sealed",
    "verify_checkpoint",
]

SEAL = b"msccl-sha256:"
"""Start of the zip comment of a checkpoint msccl wrote; then the hex SHA-256 of every byte before the
comment (torch's records, the central directory, and the end record with the comment's length)."""
_END_RECORD = 22  # bytes of a zip's end-of-central-directory record without comment


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, not a checkpoint, or altered since saved."""


class DiskFullError(OSError):
    """A checkpoint the disk has no room for; the message names the file system and the space needed.

    Nothing is replaced: the previous checkpoint at the path stays as it was.
    """

    def __init__(self, path: Path, needed: int, written: int = 0) -> None:
        folder = path.parent
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        need = (
            f"about {_size(needed)}" if needed else f"more than the {_size(written)} written when it failed"
        )
        kept = f"the previous {path.name} is kept" if path.is_file() else "no file was replaced"
        super().__init__(
            f"no space left to save checkpoint {path}: the file system mounted at {_mount_point(folder)} has "
            f"{_size(free)} free and the checkpoint needs {need}; {kept}. Free space there (or set "
            "trainer.default_root_dir / --run_dir on another disk) and resume"
        )
        self.path, self.needed = path, needed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file in the same folder, flushes it to disk, then renames it over the target.

    A rename within one file system is atomic, so `last.ckpt` is at every moment either the previous or
    the new complete checkpoint. (Lightning's default writes through an fsspec transaction whose temporary
    file lives in the system temp folder: moving it onto another file system, e.g. a cluster's shared
    disk, is a copy that a kill can interrupt.) The file is sealed with its digest as it is written
    (`save_sealed`), before the rename; `load_checkpoint` checks it. The temporary file is named after
    this machine and process; a save deletes only those of dead processes of this machine. Remote paths
    (`s3://...`) use Lightning's default, without digest.

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
        _remove_temporaries_of_dead_processes(path)
        needed = _expected_size(path)
        if needed > shutil.disk_usage(path.parent).free:  # cheap: refuse before writing anything
            raise DiskFullError(path, needed)
        temporary = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
        try:
            with open(temporary, "wb") as file:
                save_sealed(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except (OSError, RuntimeError) as error:
            if not _is_disk_full(error):
                raise
            written = temporary.stat().st_size if temporary.exists() else 0
            raise DiskFullError(path, needed, written) from error
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_directory(path.parent)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None):
        """Lightning's load, after `verify_checkpoint` (local files); torch's errors become one line."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location or (lambda storage, _: storage), weights_only)
        return load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path) -> None:
        if self._refused_last_save:  # ModelCheckpoint removes the file the refused one was to replace
            rank_zero_warn(f"kept {path}: the checkpoint meant to replace it was not written")
            return
        super().remove_checkpoint(path)


def _expected_size(path: Path) -> int:
    """Bytes the next checkpoint at `path` will take: the largest checkpoint already in its folder (the
    same model and optimiser give files of nearly the same size); 0 for the first."""
    sizes = [file.stat().st_size for file in path.parent.glob("*.ckpt") if file.is_file()]
    return max(sizes, default=0)


def _is_disk_full(error: BaseException) -> bool:
    """ENOSPC / EDQUOT, raised by Python's file or by torch's zip writer, which reports a write the disk
    refused as a position it did not reach (`[enforce fail at inline_container.cc] unexpected pos`)."""
    for cause in (error, error.__cause__, error.__context__):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    return isinstance(error, RuntimeError) and "unexpected pos" in str(error)


def _mount_point(folder: Path) -> Path:
    """The mount point of the file system that holds `folder`."""
    folder = folder.resolve()
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count < 2**30 else f"{count / 2**30:.2f} GiB"


def _remove_temporaries_of_dead_processes(path: Path) -> None:
    """Delete `.<name>.tmp-<host>-<pid>` files left by processes of this machine killed while saving; the
    file of a live process (two runs sharing a folder) or of another machine is left to its owner."""
    prefix = f".{path.name}.tmp-"
    for stale in path.parent.glob(f"{prefix}*"):
        host, _, pid = stale.name[len(prefix) :].rpartition("-")
        if host in ("", socket.gethostname()) and pid.isdigit() and not _process_exists(int(pid)):
            stale.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except OSError as error:
        return error.errno == errno.EPERM  # exists, owned by someone else
    return True


def _sha256_of_prefix(path: Path, end: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        remaining = end
        while remaining > 0 and (block := file.read(min(remaining, 1 << 24))):
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


class _Sealing:
    """A binary file that hashes what it writes and holds back the last `_END_RECORD` bytes (the zip end
    record torch writes last) until `seal`."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.digest, self.held = file, hashlib.sha256(), b""

    def write(self, data: bytes) -> int:
        given = bytes(data)
        pending = self.held + given
        body, self.held = pending[: len(pending) - _END_RECORD], pending[len(pending) - _END_RECORD :]
        self.file.write(body)
        self.digest.update(body)
        return len(given)

    def flush(self) -> None:
        self.file.flush()

    def seal(self) -> None:
        end = self.held
        if len(end) != _END_RECORD or not end.startswith(b"PK\x05\x06") or end[20:] != b"\0\0":
            raise RuntimeError(
                "torch.save did not end with a plain zip end record: cannot seal the checkpoint"
            )
        end = end[:20] + (len(SEAL) + 64).to_bytes(2, "little")  # the comment's length
        self.digest.update(end)
        self.file.write(end + SEAL + self.digest.hexdigest().encode())


def save_sealed(checkpoint: dict[str, Any], file: BinaryIO) -> None:
    """`torch.save(checkpoint, file)` with its digest as the zip's comment, in the file's last write."""
    sealing = _Sealing(file)
    torch.save(checkpoint, sealing)
    sealing.seal()


def verify_checkpoint(path: str | Path) -> None:
    """Raise `CheckpointError` (one line naming the file) unless `path` is a complete torch zip file whose
    stored digest matches its bytes. A checkpoint without a digest (written elsewhere, e.g. by Lightning
    alone) passes unchecked: msccl leaves no complete file without one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check --ckpt_path")
    try:
        with zipfile.ZipFile(path) as archive:
            comment = archive.comment
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a checkpoint ({error}): use another checkpoint"
        ) from None
    end = path.stat().st_size - len(comment)  # the comment follows the end record, whose last 2 bytes
    with open(path, "rb") as file:  # give its length (the zip reader accepts a comment cut short)
        file.seek(end - 2)
        declared = int.from_bytes(file.read(2), "little")
    if declared != len(comment):
        raise CheckpointError(f"checkpoint {path} is cut short (its zip comment is): use another checkpoint")
    if not comment.startswith(SEAL):
        return
    if comment[len(SEAL) :].decode(errors="replace") != _sha256_of_prefix(path, end):
        raise CheckpointError(
            f"checkpoint {path} was altered, damaged or cut short after it was saved (its SHA-256 digest "
            "does not match): use another checkpoint"
        )


def load_checkpoint(
    path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
) -> dict[str, Any]:
    """`verify_checkpoint`, then `torch.load`; anything torch cannot read, or a file that is not a Lightning
    checkpoint (no `state_dict`), is a `CheckpointError` (one line, never torch's advice about
    `weights_only=False`)."""
    verify_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        reason = "it holds Python objects that are not tensors or plain values"
    except (RuntimeError, EOFError, ValueError, AttributeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    else:
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict): use one of fit")
        return checkpoint
    raise CheckpointError(f"checkpoint {path} cannot be read ({reason}): use another checkpoint")


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
