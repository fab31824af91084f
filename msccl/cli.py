"""`msccl` command line: LightningCLI's fit / validate / test / predict over msccl's module and data."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

from jsonargparse import Namespace
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.cli import LightningCLI

from msccl import __version__
from msccl._offline import set_offline_defaults
from msccl.data import SegmentationDataModule
from msccl.training import SegmentationModule
from msccl.training.callbacks import NonFiniteLossGuard, RandomStateCheckpoint, WandbValidationImages
from msccl.training.checkpoint import AtomicCheckpointIO
from msccl.training.run_dir import configure_run_dir, write_summary
from msccl.training.wandb_agent import add_sweep_logger

__all__ = ["EXTRA_COMMANDS", "LIGHTNING_COMMANDS", "MscclCLI", "build_cli", "main", "usage"]


class MscclCLI(LightningCLI):
    """LightningCLI with msccl's defaults: model and data chosen by `class_path`, data facts linked.

    The number of classes, class names, ignore id and class groups come from the data module, so
    configs never repeat them; unknown keys are rejected by jsonargparse with the offending key named.
    Every run writes into one run directory (`msccl.training.run_dir`); `predict` writes only into
    `--output`. Checkpoints are saved atomically, and three callbacks are always present (their own
    config keys): the non-finite-loss guard, the random-state checkpoint and W&B validation images.
    """

    run_dir: Path | None = None

    def add_arguments_to_parser(self, parser) -> None:
        for key in ("num_classes", "class_names", "ignore_index", "class_groups"):
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        parser.add_lightning_class_args(NonFiniteLossGuard, "nonfinite_loss_guard")
        parser.add_lightning_class_args(RandomStateCheckpoint, "random_state_checkpoint")
        parser.add_lightning_class_args(WandbValidationImages, "wandb_validation_images")

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
        """LightningCLI completes the model config from a checkpoint's hyperparameters, which would also
        reset `evaluation` to the training run's: the evaluation settings given now win."""
        subcommand = self.config.get("subcommand")
        key = f"{subcommand}.model.init_args.evaluation"
        evaluation = self.config.get(key) if subcommand else None
        super()._parse_ckpt_path()
        if subcommand and key in self.config:
            self.config[key] = evaluation

    def before_instantiate_classes(self) -> None:
        """Place the run (edits `trainer.*` of the config the objects are built from)."""
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
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
        resume = self.subcommand == "fit" and ckpt_path is not None
        if (
            resume
            and run_dir is None
            and ckpt_path != "last"
            and Path(ckpt_path).parent.name == "checkpoints"
        ):
            run_dir = str(Path(ckpt_path).parents[1])  # resuming from a run's checkpoint continues that run
        self.run_dir = configure_run_dir(config, run_dir, resume)

    def after_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        # the saved config.yaml keeps the trainer settings as given, not the placed ones, so
        # `--config <run dir>/config.yaml` starts a new run, or with `--ckpt_path last` resumes this one
        self.config[self.subcommand].trainer = self._given_trainer_config
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def before_predict(self) -> None:
        arguments = self.config_init["predict"]
        if arguments.get("return_predictions") is None:
            arguments["return_predictions"] = False  # written to files as they come, not kept in memory

    def _write_summary(self) -> None:
        if self.run_dir is not None and self.trainer.is_global_zero:
            write_summary(self.run_dir, self.trainer.callback_metrics)
            print(f"run directory: {self.run_dir} (config.yaml, metrics, checkpoints, summary.json)")

    after_fit = after_validate = after_test = _write_summary


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


# LightningCLI's subcommands, with the one line `msccl --help` shows for each.
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train and validate a model (--config conf/X.yaml; any key overridable)",
    "validate": "evaluate a checkpoint on the validation split (--ckpt_path)",
    "test": "evaluate a checkpoint on the test split with the configured protocol (--ckpt_path)",
    "predict": "write label PNGs and overlays for a folder of images (--output)",
}

# Subcommands beyond LightningCLI's, by name: "module:function", the function taking the remaining
# arguments and returning an exit code. Imported only when used, so `msccl fit` does not pay for them;
# `msccl --help` shows the first line of the module's docstring (after its "`msccl NAME ...`: " prefix).
EXTRA_COMMANDS: dict[str, str] = {
    "data": "msccl.data.check:main",
    "export": "msccl.models.export:main",
    "sweep": "msccl.training.sweep:main",
}


def _extra_command_summary(target: str) -> str:
    """One line for `msccl --help`: the first docstring line of the command's module, minus its prefix."""
    doc = importlib.import_module(target.split(":")[0]).__doc__ or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    summary = first.split("`: ", 1)[-1] if first.startswith("`msccl") else first
    return summary.rstrip(".")


def usage() -> str:
    """The text of `msccl --help`: every subcommand with one line each."""
    commands = LIGHTNING_COMMANDS | {name: _extra_command_summary(t) for name, t in EXTRA_COMMANDS.items()}
    width = max(map(len, commands))
    lines = [
        f"msccl {__version__}: multi-scale and cross-scale contrastive learning for semantic segmentation",
        "",
        "usage: msccl COMMAND [arguments]   (`msccl COMMAND --help` lists a command's arguments)",
        "       msccl --version",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {summary}" for name, summary in commands.items()),
    ]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """Entry point of the `msccl` command (`args` defaults to `sys.argv[1:]`).

    The console script reaches it through `msccl.__main__`, which sets the offline defaults before this
    module's imports; calling it in-process sets those a library reads at run time (W&B's mode).
    """
    set_offline_defaults()
    # Lightning 2.6 on torch 2.14 warns about its own pytree use at every fit: noise for a user
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    argv = sys.argv[1:] if args is None else args
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        print(f"msccl {__version__}")
        sys.exit(0)
    if argv[0] in EXTRA_COMMANDS:
        module, function = EXTRA_COMMANDS[argv[0]].split(":")
        sys.exit(getattr(importlib.import_module(module), function)(argv[1:]))
    build_cli(args)  # None lets LightningCLI read sys.argv itself (and not warn about both)
