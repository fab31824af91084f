"""The `msccl` command (console script and `python -m msccl`): offline defaults first, then msccl.cli."""

from msccl._offline import set_offline_defaults


def main() -> None:
    """Set the offline defaults before msccl.cli imports huggingface_hub, wandb and albumentations (they
    read them at import), then run the command line."""
    set_offline_defaults()
    from msccl.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
