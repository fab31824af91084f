"""The `msccl` command (console script and `python -m msccl`): offline defaults first, then msccl.cli."""

import sys

from msccl._offline import set_offline_defaults
from msccl.commands import run_command_without_lightning


def main() -> None:
    """Set the offline defaults before msccl.cli imports huggingface_hub, wandb and albumentations (they
    read them at import), answer what needs no Lightning (`--help` in a fraction of a second), then run
    the command line."""
    set_offline_defaults()
    run_command_without_lightning(sys.argv[1:])
    from msccl.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
