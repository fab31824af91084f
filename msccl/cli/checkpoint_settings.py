"""Model settings given together with `--ckpt_path`: applied over the checkpoint's, or refused, with the
key named, where the checkpoint's weights cannot follow (LightningCLI would let the checkpoint win)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from msccl.training.checkpoint import CheckpointError

__all__ = ["FIXED_BY_CHECKPOINT", "apply_given_settings", "plain"]

# Model settings a checkpoint fixes: its weights only fit this network, these classes and these heads.
# A different value given with --ckpt_path is refused; every other model setting given is applied.
FIXED_BY_CHECKPOINT = (
    "class_path",
    "init_args.num_classes",
    "init_args.projection_dim",
    "init_args.projection_layout",
    "init_args.contrastive",
)
_FIXED_BRANCHES = ("init_args.net.", "init_args.contrastive.class_path")
_ABSENT = object()


def apply_given_settings(model: Namespace, full: Namespace, given: Namespace | None, ckpt_path: Path) -> None:
    """Put each model setting given now (`given`: only what the command line and --config files set;
    `full`: the same with every default) over the checkpoint's (`model`), saying so; refuse, naming
    every such key, where the checkpoint's weights cannot follow."""
    if given is None:
        return
    refused, applied = [], []
    for key, value in given.items():
        stored = _lookup(model, key)
        if stored is not _ABSENT and plain(value) == plain(stored):
            continue
        before = "unset" if stored is _ABSENT else repr(plain(stored))
        change = f"model.{key}={plain(value)!r} (checkpoint: {before})"
        if key in FIXED_BY_CHECKPOINT or key.startswith(_FIXED_BRANCHES):
            refused.append(change)
            continue
        applied.append(change)
        if stored is not _ABSENT:
            model[key] = value
        else:  # e.g. evaluation.mode where the checkpoint has `evaluation: null`: the given branch, complete
            parts = key.split(".")
            branch = next(
                ".".join(parts[:n])
                for n in range(1, len(parts) + 1)
                if not isinstance(_lookup(model, ".".join(parts[:n])), Namespace)
            )
            model[branch] = _lookup(full, branch)
    if refused:
        raise CheckpointError(
            f"--ckpt_path {ckpt_path} was trained with other settings that its weights depend on: "
            f"{'; '.join(refused)}. Drop these settings, or train a new run without --ckpt_path"
        )
    for line in applied:
        print(f"msccl: applying {line} over {ckpt_path}", file=sys.stderr)


def _lookup(namespace: Namespace, key: str) -> Any:
    """`namespace[key]` for a dotted key, `_ABSENT` where any part of the path is missing."""
    value: Any = namespace
    for part in key.split("."):
        if not isinstance(value, Namespace) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def plain(value: Any) -> Any:
    """A jsonargparse Namespace as a dict (to compare or print it), anything else as it is."""
    return value.as_dict() if isinstance(value, Namespace) else value
