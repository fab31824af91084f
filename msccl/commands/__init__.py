"""The `msccl` commands by name, and what runs before Lightning is imported: `--help`, `--version` and
msccl's own commands (`data`, `export`, `plot`, `sweep`, `config`).

This module imports neither torch nor Lightning, so `msccl --help` and `msccl config list` answer at once;
each command's module is imported only when it runs, and `--help` reads the one-line summaries from the
modules' docstrings without importing them.
"""

from __future__ import annotations

import ast
import importlib
import itertools
import sys
import textwrap
import warnings
from pathlib import Path

from msccl._version import __version__

__all__ = [
    "EXTRA_COMMANDS",
    "LIGHTNING_COMMANDS",
    "command_summaries",
    "listing_line",
    "run_command_without_lightning",
    "usage",
]

# LightningCLI's subcommands, with the one line `msccl --help` shows for each.
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train and validate a model (--config NAME or FILE, e.g. synthetic; any key overridable)",
    "validate": "evaluate a checkpoint on the validation split (--ckpt_path)",
    "test": "evaluate a checkpoint on the test split with the configured protocol (--ckpt_path)",
    "predict": "write label PNGs and overlays for a folder of images (--output)",
}

# Subcommands beyond LightningCLI's, by name: "module:function", the function taking the remaining
# arguments and returning an exit code. Imported only when used, so `msccl fit` does not pay for them.
# `msccl --help` shows the module docstring's first paragraph: one line per "`msccl NAME ...`: summary"
# (several for a command with subcommands), or the whole paragraph under NAME.
EXTRA_COMMANDS: dict[str, str] = {
    "data": "msccl.commands.data:main",
    "export": "msccl.commands.export:main",
    "plot": "msccl.commands.plot:main",
    "sweep": "msccl.commands.sweep:main",
    "config": "msccl.commands.config:main",
}

HELP_WIDTH = 110


def command_summaries(name: str, target: str) -> dict[str, str]:
    """{"data check": "list every problem ...", ...}: the help lines of one extra command, from the
    first paragraph of its module's docstring (joined, never cut mid-sentence)."""
    paragraph = _module_docstring(target.split(":")[0]).strip().split("\n\n")[0]
    summaries: dict[str, str] = {}
    current = name
    for line in paragraph.splitlines():
        line = line.strip()
        if line.startswith("`msccl ") and "`: " in line:
            words = line[len("`msccl ") : line.index("`: ")].split()
            current = " ".join(itertools.takewhile(lambda w: w.isidentifier() and w.islower(), words)) or name
            line = line.split("`: ", 1)[1]
        summaries[current] = f"{summaries.get(current, '')} {line}".strip()
    return {command: text.rstrip(".;") for command, text in summaries.items()}


def _module_docstring(module: str) -> str:
    """A module's docstring, read from its source: importing msccl.data would import torch."""
    parts = module.split(".")
    if parts[0] == "msccl":
        path = Path(__file__).resolve().parents[1].joinpath(*parts[1:])
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        return ast.get_docstring(ast.parse(source.read_text())) or ""
    return importlib.import_module(module).__doc__ or ""


def listing_line(name: str, text: str) -> str:
    """`  NAME  text`, wrapped at HELP_WIDTH under the text's first column (never cut)."""
    first = f"  {name}  "
    return textwrap.fill(text, HELP_WIDTH, initial_indent=first, subsequent_indent=" " * len(first))


def usage() -> str:
    """The text of `msccl --help`: every command (and subcommand) with its summary, wrapped, never cut."""
    commands = dict(LIGHTNING_COMMANDS)
    for name, target in EXTRA_COMMANDS.items():
        commands |= command_summaries(name, target)
    width = max(map(len, commands))
    listing = [listing_line(name.ljust(width), summary) for name, summary in commands.items()]
    lines = [
        f"msccl {__version__}: multi-scale and cross-scale contrastive learning for semantic segmentation",
        "",
        "usage: msccl COMMAND [arguments]   (`msccl COMMAND --help` lists a command's arguments)",
        "       msccl --version",
        "",
        "commands:",
        *listing,
    ]
    return "\n".join(lines)


def run_command_without_lightning(argv: list[str]) -> None:
    """Answer `--help`, `--version` and msccl's own commands, then exit; return for LightningCLI's
    commands (and anything else, which LightningCLI reports)."""
    # Lightning 2.6 on torch 2.14 warns about its own pytree use at every fit: noise for a user
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        print(f"msccl {__version__}")
        sys.exit(0)
    if argv[0] in EXTRA_COMMANDS:
        module, function = EXTRA_COMMANDS[argv[0]].split(":")
        sys.exit(getattr(importlib.import_module(module), function)(argv[1:]))
