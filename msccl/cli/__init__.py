"""`msccl` command line: LightningCLI's fit / validate / test / predict over msccl's module and data."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.cli import LightningCLI

from msccl._offline import set_offline_defaults
from msccl.cli.checkpoint_settings import apply_given_settings, plain
from msccl.cli.config_arguments import (
    check_a_config_is_given,
    check_config_files_are_yaml,
    resolve_config_names,
)
from msccl.cli.user_errors import DEBUG_VARIABLE, ConfigError, one_line_errors
from msccl.commands import run_command_without_lightning
from msccl.data import SegmentationDataModule
from msccl.training import SegmentationModule
from msccl.training.callbacks import (
    EvaluationFigures,
    InterruptCheckpoint,
    NonFiniteLossGuard,
    RandomStateCheckpoint,
    WandbValidationImages,
)
from msccl.training.callbacks.resilience import resume_command
from msccl.training.checkpoint import AtomicCheckpointIO, CheckpointError, DiskFullError, load_checkpoint
from msccl.training.prediction import PredictionWriter
from msccl.training.run_dir import (
    configure_run_dir,
    finish_wandb_run,
    resolve_last_checkpoint,
    runs_root,
    write_summary,
)
from msccl.training.wandb_agent import add_sweep_logger

__all__ = ["MscclCLI", "build_cli", "main"]


class MscclCLI(LightningCLI):
    """LightningCLI with msccl's defaults: model and data chosen by `class_path`, data facts linked.

    The number of classes, class names, ignore id, class groups and palette come from the data module, so
    configs never repeat them; unknown keys are rejected by jsonargparse with the offending key named.
    Every run writes into one run directory (`msccl.training.run_dir`); `predict` writes only into
    `--output`. Checkpoints are saved atomically, and five callbacks are always present (their own
    config keys): the non-finite-loss guard, the random-state checkpoint, the interrupt checkpoint (told
    the command line, to print how to resume), W&B validation images and the evaluation figures
    (confusion matrix and per-class IoU pictures in the run directory).

    `--ckpt_path` (`_parse_ckpt_path`): `last` is resolved to a file in every subcommand; the file is
    checked (exists, complete, digest) before any folder is created; model settings given explicitly
    (command line or --config files) are applied over the checkpoint's, or refused with the key named
    where the weights cannot follow (network, classes, heads: `msccl.cli.checkpoint_settings`). A run that
    fails before its first training step leaves no new run directory behind.
    """

    run_dir: Path | None = None
    command_line: list[str] | None = None
    _created_run_dir: bool = False
    _new_folders: list[Path] = []  # parents of the run directory that did not exist before it
    _given_ckpt_path: str | None = None
    _checkpoint_classes: int | None = None
    _given_num_classes: int | None = None

    def parse_arguments(self, parser, args) -> None:
        given = list(sys.argv[1:] if args is None else args)
        self.command_line = ["msccl", *given]  # as typed: packaged names work wherever it is run again
        self._args = resolve_config_names(given)
        check_a_config_is_given(self._args)
        check_config_files_are_yaml(self._args)
        self.config = parser.parse_args(self._args)

    def add_arguments_to_parser(self, parser) -> None:
        for key in ("num_classes", "class_names", "ignore_index", "class_groups", "palette"):
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        parser.add_lightning_class_args(NonFiniteLossGuard, "nonfinite_loss_guard")
        parser.add_lightning_class_args(RandomStateCheckpoint, "random_state_checkpoint")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.add_lightning_class_args(WandbValidationImages, "wandb_validation_images")
        parser.add_lightning_class_args(EvaluationFigures, "evaluation_figures")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument(
                "--output",
                type=str | None,
                default=None,
                help="Folder for the label PNGs and overlays (required).",
            )
        else:
            parser.add_argument(
                "--run_dir",
                type=str | None,
                default=None,
                help="The run directory (default: <trainer.default_root_dir>/version_N, the next free N; "
                "with fit --ckpt_path last, the newest run that has checkpoints/last.ckpt).",
            )
        return parser

    def _parse_ckpt_path(self) -> None:
        """Resolve and check `--ckpt_path`, then build the model config from the checkpoint's
        hyperparameters with the settings given now applied over them (LightningCLI would silently let
        the checkpoint's win over everything)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        self._given_ckpt_path = config.ckpt_path
        self._given_num_classes = config.model.get("init_args.num_classes") if config.model else None
        ckpt_path = self._resolve_ckpt_path(subcommand, config)
        config.ckpt_path = None if ckpt_path is None else str(ckpt_path)
        if ckpt_path is None:
            return
        hparams = dict(load_checkpoint(ckpt_path, weights_only=True).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:  # how LightningCLI stores a subclass-mode model (its _parse_ckpt_path)
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self._checkpoint_classes = hparams.get("dict_kwargs", hparams).get("num_classes")
        subcommand_args = self._args[self._args.index(subcommand) + 1 :]
        given = self._parser(subcommand).parse_args(subcommand_args, defaults=False).get("model")
        merged = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        apply_given_settings(merged[subcommand].model, config.model, given, ckpt_path)
        self.config = merged

    def _resolve_ckpt_path(self, subcommand: str, config: Namespace) -> Path | None:
        """`last` -> the newest run's `checkpoints/last.ckpt` (None for a `fit` with none yet: a new run;
        an error elsewhere); a file must exist now, before anything is created."""
        if config.ckpt_path is None:
            return None
        if config.ckpt_path != "last":
            path = Path(config.ckpt_path)
            if not path.is_file():
                raise CheckpointError(f"--ckpt_path {path}: no such file")
            return path
        path = resolve_last_checkpoint(config.trainer, config.get("run_dir"))
        if path is None and subcommand != "fit":
            where = config.get("run_dir") or f"any run under {runs_root(config.trainer)}"
            raise CheckpointError(
                f"--ckpt_path last: no checkpoints/last.ckpt in {where}; train with msccl fit first, "
                "or give the checkpoint file"
            )
        return path

    def before_instantiate_classes(self) -> None:
        """Place the run (edits `trainer.*` of the config the objects are built from)."""
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        _check_optimizer(config.model)
        self._given_trainer_config = config.trainer.clone()
        if self.subcommand == "predict":
            if not config.output:
                self._parser("predict").error("msccl predict needs --output DIR (where the predictions go)")
            config.trainer.logger = False
            config.trainer.default_root_dir = config.output  # its config.yaml too: nothing outside it
            writer = Namespace(
                class_path="msccl.training.prediction.PredictionWriter",
                init_args=Namespace(output_dir=config.output),
            )
            config.trainer.callbacks = [*(config.trainer.callbacks or []), writer]
            return
        add_sweep_logger(config.trainer)  # under `wandb agent`: the trial reports to its sweep
        run_dir, ckpt_path = config.run_dir, config.ckpt_path
        # fit continues a run from a checkpoint inside its checkpoints/ (what `last` resolves to) or into
        # an explicit --run_dir; any other checkpoint starts a new run from its state
        if self.subcommand == "fit" and run_dir is None and ckpt_path is not None:
            if Path(ckpt_path).parent.name == "checkpoints":
                run_dir = str(Path(ckpt_path).parents[1])
        resume = self.subcommand == "fit" and ckpt_path is not None and run_dir is not None
        folders = [Path(run_dir).parent if run_dir is not None else runs_root(config.trainer)]
        self._new_folders = [folder for folder in [*folders, *folders[0].parents] if not folder.exists()]
        self.run_dir, self._created_run_dir = configure_run_dir(config, run_dir, resume)

    def instantiate_classes(self) -> None:
        with self._discard_new_run_dir_on_failure():
            super().instantiate_classes()
            self._check_classes_match_the_data()

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            with self._discard_new_run_dir_on_failure():
                super()._run_subcommand(subcommand)
        except DiskFullError as error:
            self._add_resume_command(error)
            raise
        finally:  # on every way out: Lightning's teardown may have reinstated the run's signal handlers
            for callback in self.trainer.callbacks:
                if isinstance(callback, InterruptCheckpoint):
                    callback.disarm()
            finish_wandb_run(self.trainer.loggers)

    def _add_resume_command(self, error: DiskFullError) -> None:
        """Tell `one_line_errors` the command that resumes from the run's newest checkpoint (the one kept)."""
        folder = self.run_dir / "checkpoints" if self.run_dir is not None else error.path.parent
        last = folder / "last.ckpt"
        kept = last if last.is_file() else max(folder.glob("*.ckpt"), key=os.path.getmtime, default=None)
        if self.subcommand == "fit" and kept is not None and self.command_line is not None:
            error.after = f"resume with:\n  {resume_command(self.command_line, kept.resolve())}"
        elif self.subcommand == "fit":
            error.after = "no checkpoint was saved before: free space and run the command again"

    @contextmanager
    def _discard_new_run_dir_on_failure(self) -> Iterator[None]:
        """A run directory this process created is removed again when the run fails before its first
        training step and before any checkpoint: a bad setting leaves no stray `version_N` behind."""
        try:
            yield
        except Exception:
            trainer = getattr(self, "trainer", None)
            run_dir = self.run_dir
            stepped = trainer is not None and trainer.global_step > 0
            if self._created_run_dir and run_dir is not None and not stepped:
                if not any((run_dir / "checkpoints").glob("*.ckpt")):
                    shutil.rmtree(run_dir, ignore_errors=True)
                    for folder in self._new_folders:  # runs/<name>/ and above, if this run made them
                        with suppress(OSError):  # not empty: another run is in it
                            folder.rmdir()
            raise

    def after_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        # the saved config.yaml keeps the trainer settings and ckpt_path as given, not the placed ones, so
        # `--config <run dir>/config.yaml` starts a new run, or with `--ckpt_path last` resumes this one
        self.config[self.subcommand].trainer = self._given_trainer_config
        self.config[self.subcommand].ckpt_path = self._given_ckpt_path
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for callback in self.trainer.callbacks:
            if isinstance(callback, InterruptCheckpoint):
                callback.command = self.command_line

    def _check_classes_match_the_data(self) -> None:
        """A `model.init_args.num_classes` given, or a checkpoint's, must be the data's (the link from the
        data would otherwise replace the first in silence, and the second fail deep in weight loading)."""
        classes = getattr(self.datamodule, "num_classes", None)
        if self.subcommand is None or classes is None:
            return
        data = f"data ({self.config[self.subcommand].data.class_path})"
        if self._given_num_classes not in (None, classes):
            raise ConfigError(
                f"model.init_args.num_classes={self._given_num_classes} but the {data} has {classes} "
                "classes: drop the setting (it comes from the data)"
            )
        if self._checkpoint_classes not in (None, classes):
            raise CheckpointError(
                f"checkpoint {self.config[self.subcommand].ckpt_path} predicts {self._checkpoint_classes} "
                f"classes but the {data} has {classes}: use data with those classes or another checkpoint"
            )

    def before_predict(self) -> None:
        arguments = self.config_init["predict"]
        if arguments.get("return_predictions") is None:
            arguments["return_predictions"] = False  # written to files as they come, not kept in memory

    def after_predict(self) -> None:
        """Exit 1 when an input image could not be read (the prediction writer has listed each)."""
        if any(isinstance(c, PredictionWriter) and c.unreadable for c in self.trainer.callbacks):
            sys.exit(1)

    def _write_summary(self) -> None:
        if self.run_dir is not None and self.trainer.is_global_zero:
            write_summary(self.run_dir, self.trainer.callback_metrics)
            print(f"run directory: {self.run_dir} (config.yaml, metrics, checkpoints, summary.json)")

    after_fit = after_validate = after_test = _write_summary


def _check_optimizer(model: Namespace | None) -> None:
    """Build the configured optimiser over one dummy parameter, so that a value torch refuses (a negative
    learning rate, ...) stops the run now, with the key named, not at the first step."""
    optimizer = model.get("init_args.optimizer") if model is not None else None
    if not isinstance(optimizer, Namespace) or not optimizer.get("class_path"):
        return
    module, _, name = optimizer.class_path.rpartition(".")
    arguments = plain(optimizer.get("init_args")) or {}
    try:
        getattr(importlib.import_module(module), name)([torch.zeros(1, requires_grad=True)], **arguments)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model.init_args.optimizer ({optimizer.class_path}): {error}") from None


def build_cli(args: list[str] | None, run: bool = True) -> MscclCLI:
    """Parse `args` (None: the command line) and run the subcommand unless `run=False`."""
    return MscclCLI(
        SegmentationModule,
        SegmentationDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the module owns optimiser and schedule (model.init_args.*)
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the `msccl` command (`args` defaults to `sys.argv[1:]`).

    The console script reaches it through `msccl.__main__`, which sets the offline defaults before this
    module's imports; calling it in-process sets those a library reads at run time (W&B's mode).
    """
    set_offline_defaults()
    argv = sys.argv[1:] if args is None else args
    run_command_without_lightning(argv)  # --help, --version, data, export, plot, sweep, config: exits
    debug = "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        if args is None:
            sys.argv[1:] = argv
        else:
            args = argv
    with one_line_errors(debug):
        build_cli(args)  # None lets LightningCLI read sys.argv itself (and not warn about both)
