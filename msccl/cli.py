"""`msccl` command line: LightningCLI's fit / validate / test / predict over msccl's module and data."""

from __future__ import annotations

import importlib
import sys

from lightning.pytorch.cli import LightningCLI

from msccl.data import SegmentationDataModule
from msccl.training import SegmentationModule

__all__ = ["MscclCLI", "build_cli", "main"]


class MscclCLI(LightningCLI):
    """LightningCLI with msccl's defaults: model and data chosen by `class_path`, data facts linked.

    The number of classes, class names and ignore id come from the data module, so configs never
    repeat them; unknown keys are rejected by jsonargparse with the offending key named.
    """

    def add_arguments_to_parser(self, parser) -> None:
        for key in ("num_classes", "class_names", "ignore_index"):
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")


def build_cli(args: list[str], run: bool = True) -> MscclCLI:
    """Parse `args` (and run the subcommand unless `run=False`); the CLI object keeps model/trainer."""
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


# Subcommands beyond LightningCLI's, by name: "module:function", the function taking the remaining
# arguments and returning an exit code. Imported only when used, so `msccl fit` does not pay for them.
EXTRA_COMMANDS: dict[str, str] = {
    "data": "msccl.data.check:main",
    "export": "msccl.models.export:main",
}


def main(args: list[str] | None = None) -> None:
    """Entry point of the `msccl` console script (`args` defaults to `sys.argv[1:]`)."""
    args = sys.argv[1:] if args is None else args
    if args and args[0] in EXTRA_COMMANDS:
        module, function = EXTRA_COMMANDS[args[0]].split(":")
        sys.exit(getattr(importlib.import_module(module), function)(args[1:]))
    build_cli(args)
