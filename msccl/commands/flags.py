"""The argument parser of msccl's own commands (`msccl data`, `export`, `plot`, `sweep`, `config`).

One flag style across the whole command line: underscores, as in LightningCLI's `--ckpt_path` and
`--run_dir` and in every config key (`--trainer.max_epochs`), e.g. `msccl data browse --num_images 4`. The
dashed spelling (`--num-images 4`) is accepted too, as an alias, so both habits work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["CommandParser"]

_ALIAS_NOTE = "Flags are written with underscores (--num_images); the dashed spelling works too."


class CommandParser(argparse.ArgumentParser):
    """argparse.ArgumentParser that also accepts `--a-b` for each of its `--a_b` options (its subcommands'
    parsers are CommandParsers too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", _ALIAS_NOTE)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        given = list(sys.argv[1:] if args is None else args)
        end = given.index("--") if "--" in given else len(given)  # after `--` everything is a value
        spelled = [self._underscored(argument) for argument in given[:end]] + given[end:]
        return super().parse_known_args(spelled, namespace)

    def _underscored(self, argument: str) -> str:
        """`--num-images` / `--num-images=4` -> `--num_images` / `--num_images=4` where that is an option
        of this parser; anything else unchanged (values, a subcommand's options, its own parser's job)."""
        if not argument.startswith("--") or "-" not in argument[2:]:
            return argument
        flag, equals, value = argument.partition("=")
        underscored = "--" + flag[2:].replace("-", "_")
        if underscored in self._option_string_actions and flag not in self._option_string_actions:
            return underscored + equals + value
        return argument
