"""The `--config` arguments of `msccl fit|validate|test|predict`, before jsonargparse reads them: packaged
config names become file paths, and a missing config or a file that is not a YAML mapping of settings is
one line naming it (jsonargparse would print its usage, or a line without the file)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from msccl.cli.user_errors import ConfigError
from msccl.commands import LIGHTNING_COMMANDS
from msccl.configs import config_path

__all__ = ["CONFIG_FLAGS", "check_a_config_is_given", "check_config_files_are_yaml", "resolve_config_names"]

CONFIG_FLAGS = ("--config", "-c")


def resolve_config_names(args: list[str]) -> list[str]:
    """Each `--config X` / `--config=X` / `-c X` that is not a file but names a packaged config
    (`synthetic`, `experiments/cityscapes_hrnet_w48`, `conf/synthetic.yaml` outside the checkout) is
    replaced by that file's path (msccl.configs); an unknown one is a ConfigNotFoundError (one line)."""
    resolved, expecting = [], False
    for argument in args:
        if expecting:
            argument, expecting = str(config_path(argument)), False
        elif argument.startswith("--config="):
            argument = f"--config={config_path(argument.split('=', 1)[1])}"
        else:
            expecting = argument in CONFIG_FLAGS
        resolved.append(argument)
    return resolved


def check_a_config_is_given(args: list[str]) -> None:
    """`msccl fit` with neither a --config nor the model and data on the command line: say so in one line
    (jsonargparse's own three-line usage error names neither --config nor the packaged configs)."""
    subcommand = next((a for a in args if a in LIGHTNING_COMMANDS), None)
    if subcommand is None or any(a in ("-h", "--help") or a.startswith("--print_config") for a in args):
        return
    given = any(a in CONFIG_FLAGS or a.startswith("--config=") for a in args)
    if not given and not any(a.startswith(("--model", "--data")) for a in args):
        raise ConfigError(
            f"msccl {subcommand} needs a config: --config NAME or FILE (e.g. --config synthetic; "
            "`msccl config list` shows the packaged ones, `msccl config copy NAME DIR` copies one to edit)"
        )


def check_config_files_are_yaml(args: list[str]) -> None:
    """Every --config file given is checked by `_check_config_file` before jsonargparse reads it."""
    for flag, value in zip(args, [*args[1:], None], strict=True):
        path = flag.split("=", 1)[1] if flag.startswith("--config=") else value
        if (flag.startswith("--config=") or flag in CONFIG_FLAGS) and path is not None:
            _check_config_file(path)


def _check_config_file(path: str) -> None:
    """One line naming a --config file that is a folder, empty, not text, not YAML (with the line) or not
    a mapping of settings (jsonargparse prints its usage, or a line without the file, for each)."""
    file = Path(path)
    if os.path.isdir(path):  # (not Path.is_dir: an inline YAML value too long for a file name raises there)
        raise ConfigError(f"--config {path} is a folder: give a YAML file (e.g. conf/synthetic.yaml)")
    try:
        text = file.read_bytes().decode("utf-8")
    except PermissionError as error:
        raise ConfigError(f"--config {path} cannot be read ({error.strerror})") from None
    except OSError:
        return  # no such file: jsonargparse reports it, or reads the value as inline YAML itself
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not a text file: give a YAML config file") from None
    try:
        settings = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or error
        raise ConfigError(f"--config {path}:{where}: YAML syntax error: {problem}") from None
    if settings is None:
        raise ConfigError(f"--config {path} is empty: give a config with settings (e.g. conf/synthetic.yaml)")
    if not isinstance(settings, dict):
        raise ConfigError(
            f"--config {path} holds a {type(settings).__name__}, not a mapping of settings "
            "(`key: value` lines): give a config such as conf/synthetic.yaml"
        )
