"""One directory per run, chosen before anything is built, so every file of a run lands in it.

The run directory is `<trainer.default_root_dir>/version_N` (the next free N, reserved by an exclusive
create: two runs started together on one root get two directories), or exactly `--run_dir`.
Every CSV/TensorBoard logger, every W&B logger (its `wandb/` folder and, unless the user set them, the
W&B cache and data folders), every `ModelCheckpoint` without a `dirpath`, the saved `config.yaml` and a
`summary.json` of the final metrics write into it. `--ckpt_path last` means the newest run of the root
that has a `checkpoints/last.ckpt` (or that of the given `--run_dir`), in every subcommand
(`resolve_last_checkpoint`). `fit` continues a run only from such a checkpoint, from any checkpoint
inside a run's `checkpoints/`, or into an explicit `--run_dir`: in place, same W&B run id, with the
previous `metrics.csv` kept as `metrics.<k>.csv` (Lightning's CSVLogger would otherwise delete it).
Any other checkpoint starts a new run from its state: no run is ever overwritten by another.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

__all__ = [
    "configure_run_dir",
    "next_version",
    "newest_resumable_run",
    "reserve_run_dir",
    "resolve_last_checkpoint",
    "runs_root",
    "finish_wandb_run",
    "write_summary",
]

WANDB_DIR_VARIABLES = {
    "WANDB_CACHE_DIR": "cache",
    "WANDB_DATA_DIR": "data",
    "WANDB_ARTIFACT_DIR": "artifacts",
}
"""W&B folders that default to the user's home (~/.cache/wandb ...): kept inside the run directory."""
_USER_SET_WANDB_DIRS = frozenset(name for name in WANDB_DIR_VARIABLES if name in os.environ)

RUN_DIR_VARIABLE = "MSCCL_RUN_DIR"
"""Set by rank 0 once its run directory is chosen: DDP ranks that Lightning starts as child processes
inherit it and write into the same directory instead of reserving their own."""

_VERSION = re.compile(r"version_(\d+)$")


def _class(entry: Any) -> type | None:
    """The class named by a config entry's `class_path` (None for `true` / `false` / unknown)."""
    class_path = entry.get("class_path") if isinstance(entry, Namespace) else None
    if not class_path:
        return None
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name, None)


def _entries(value: Any) -> Iterator[tuple[type, Namespace]]:
    """(class, init_args) of each `class_path` entry of a logger or callback config value."""
    for entry in value if isinstance(value, list) else [value]:
        cls = _class(entry)
        if cls is not None:
            if entry.get("init_args") is None:
                entry.init_args = Namespace()
            yield cls, entry.init_args


def next_version(root: Path) -> Path:
    """`root/version_N` with N one above the highest existing (as Lightning's CSVLogger numbers them)."""
    versions = [
        int(m.group(1)) for p in root.glob("version_*") if (m := _VERSION.match(p.name)) and p.is_dir()
    ]
    return root / f"version_{max(versions, default=-1) + 1}"


def reserve_run_dir(root: Path) -> Path:
    """Create and return `root/version_N` for the next free N. `mkdir` is an exclusive create: of two
    processes reserving together, one gets version_N, the other version_N+1."""
    root.mkdir(parents=True, exist_ok=True)
    path = next_version(root)
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path = root / f"version_{int(_VERSION.search(path.name).group(1)) + 1}"


def newest_resumable_run(root: Path) -> Path | None:
    """The run under `root` whose `checkpoints/last.ckpt` was written most recently."""
    candidates = list(root.glob("*/checkpoints/last.ckpt"))
    return max(candidates, key=lambda p: p.stat().st_mtime).parents[1] if candidates else None


def _wandb_run_id(run_dir: Path) -> str | None:
    """Id of the newest W&B run (online or offline) recorded in `run_dir/wandb/`."""
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda p: p.name.split("-")[-2])
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def _keep_previous_metrics(run_dir: Path) -> None:
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        k = 1
        while (run_dir / f"metrics.{k}.csv").exists():
            k += 1
        metrics.rename(run_dir / f"metrics.{k}.csv")


def _versioned_loggers(trainer: Namespace) -> list[Namespace]:
    return [args for cls, args in _entries(trainer.logger) if issubclass(cls, (CSVLogger, TensorBoardLogger))]


def runs_root(trainer: Namespace) -> Path:
    """The folder holding the `version_N` runs of a config: `trainer.default_root_dir`, else the first
    CSV/TensorBoard logger's `save_dir/name`, else `runs`."""
    if trainer.default_root_dir:
        return Path(trainer.default_root_dir)
    versioned = _versioned_loggers(trainer)
    if versioned:
        return Path(versioned[0].save_dir or ".") / (versioned[0].get("name") or "")
    return Path("runs")


def resolve_last_checkpoint(trainer: Namespace, run_dir: str | None) -> Path | None:
    """What `--ckpt_path last` means: `<run_dir>/checkpoints/last.ckpt`, or that of the newest run of the
    config's root (`runs_root`); None when there is none."""
    if run_dir is not None:
        last = Path(run_dir) / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    run = newest_resumable_run(runs_root(trainer))
    return None if run is None else run / "checkpoints" / "last.ckpt"


def configure_run_dir(config: Namespace, run_dir: str | None, resume: bool) -> tuple[Path | None, bool]:
    """Choose the run directory and point loggers, checkpoints and W&B files at it (edits only
    `config.trainer`, of one subcommand's namespace). Returns the directory and whether this call
    created it (a new `version_N`). `resume`: `run_dir` is a run being continued (its `metrics.csv` is
    kept aside). None when the config has no logger to place (`trainer.logger: false`) and no
    `--run_dir`: Lightning's defaults apply.
    """
    trainer = config.trainer
    loggers = list(_entries(trainer.logger))
    if not loggers and run_dir is None:
        return None, False
    created = False
    if run_dir is None and rank_zero_only.rank != 0 and os.environ.get(RUN_DIR_VARIABLE):
        run_dir = os.environ[RUN_DIR_VARIABLE]  # a DDP rank started by rank 0: rank 0's directory
    if run_dir is not None:
        path = Path(run_dir)
    else:
        versioned = _versioned_loggers(trainer)
        version = versioned[0].get("version") if versioned else None
        if version is not None:  # a version the config names is used as it is
            path = runs_root(trainer) / (version if isinstance(version, str) else f"version_{version}")
        else:
            path, created = reserve_run_dir(runs_root(trainer)), True
    if rank_zero_only.rank == 0:
        os.environ[RUN_DIR_VARIABLE] = str(path.resolve())
        if resume and path.is_dir():
            _keep_previous_metrics(path)

    for cls, args in loggers:
        if issubclass(cls, (CSVLogger, TensorBoardLogger)):
            args.save_dir, args.name, args.version = str(path.parent), "", path.name
        elif issubclass(cls, WandbLogger):
            _configure_wandb(args, path, resume)
    for cls, args in _entries(trainer.callbacks):
        if issubclass(cls, ModelCheckpoint) and not args.get("dirpath"):
            args.dirpath = str(path / "checkpoints")
    trainer.default_root_dir = str(path)
    return path, created


def _configure_wandb(args: Namespace, run_dir: Path, resume: bool) -> None:
    # always: jsonargparse carries `save_dir` over from a CSVLogger that a --config replaced
    args.save_dir, args.dir = str(run_dir), None
    if args.get("name") is None:
        args.name = f"{run_dir.parent.name}/{run_dir.name}"
    if resume and args.get("id") is None and args.get("version") is None:
        args.id = _wandb_run_id(run_dir)
        if args.id is not None and args.get("resume") is None:
            args.resume = "allow"
    for variable, folder in WANDB_DIR_VARIABLES.items():
        if variable not in _USER_SET_WANDB_DIRS:
            os.environ[variable] = str(run_dir / "wandb" / folder)


def finish_wandb_run(loggers: Sequence[Logger]) -> None:
    """End the W&B run of a WandbLogger among `loggers`: Lightning leaves it open after a fit, and the next
    WandbLogger in the same process (a notebook's second run) would log into it instead of its own."""
    if any(isinstance(logger, WandbLogger) for logger in loggers) and (wandb := sys.modules.get("wandb")):
        if wandb.run is not None:
            wandb.finish()


def write_summary(run_dir: Path, metrics: Mapping[str, Any]) -> Path:
    """`run_dir/summary.json`: the last value of every logged metric (what W&B calls the run summary);
    `msccl sweep` reads its objective from it."""
    summary = {key: float(value) for key, value in sorted(metrics.items())}
    path = run_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path
