"""The configs that ship with msccl, found by name: `--config synthetic` works in a checkout and after
`pip install msccl` alike.

The repository's top-level `conf/` is the only copy of the YAML files. `msccl/conf` is a symlink to it, so a
checkout (editable install included) reads `conf/` itself, and a wheel holds the files as package data
under `msccl/conf/` (pyproject.toml's `package-data`). A name is the file's path under `conf/` without
`.yaml`: `synthetic`, `data/folder`, `experiments/cityscapes_hrnet_w48`. Configs that include others by
relative path (`config: _base.yaml`) keep working, because a name resolves to the packaged file itself.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

__all__ = [
    "CONFIG_ROOT",
    "ConfigNotFoundError",
    "config_path",
    "config_summary",
    "packaged_config",
    "packaged_configs",
]

CONFIG_ROOT = (Path(__file__).parent / "conf").resolve()
"""The packaged configs: the checkout's `conf/` (through the symlink) or the installed copy."""

_SUFFIXES = (".yaml", ".yml")
_SUMMARY_LENGTH = 90


class ConfigNotFoundError(ValueError):
    """Neither a file nor the name of a packaged config."""


def packaged_configs() -> list[str]:
    """The names of every packaged config, sorted (`data/folder`, ..., `synthetic`)."""
    files = (path for suffix in _SUFFIXES for path in CONFIG_ROOT.rglob(f"*{suffix}"))
    return sorted(path.relative_to(CONFIG_ROOT).with_suffix("").as_posix() for path in files)


def config_path(name: str | os.PathLike[str]) -> Path:
    """The file of a config given as a path or as a packaged name.

    An existing path is returned as it is. Otherwise `name` is looked up among the packaged configs, with
    or without `.yaml` and with or without a leading `conf/` (so the repository's `conf/synthetic.yaml`
    also works outside the checkout). Raises ConfigNotFoundError, naming close names, for anything else.
    """
    path = Path(name)
    return path if path.exists() else packaged_config(name)


def packaged_config(name: str | os.PathLike[str]) -> Path:
    """The packaged config called `name` (`synthetic`, `data/folder.yaml`, `conf/synthetic.yaml`);
    ConfigNotFoundError, naming close names, when there is none."""
    path = Path(name)
    key = _packaged_name(path)
    if key is not None:
        for suffix in _SUFFIXES:
            candidate = CONFIG_ROOT / f"{key}{suffix}"
            if candidate.is_file():
                return candidate
    close = difflib.get_close_matches(key or path.name, packaged_configs(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigNotFoundError(
        f"config {os.fspath(name)!r} is neither a file nor a packaged config: {hint}"
        "`msccl config list` shows the packaged ones"
    )


def config_summary(name: str) -> str:
    """What a packaged config is, for `msccl config list`: the first sentence of its header comment (up
    to a line that ends in a colon: the header's example commands follow), or its first clause when
    that sentence is long."""
    text = ""
    for line in packaged_config(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        text = f"{text} {line.lstrip('#').strip()}".strip()
        if text.endswith(":") or re.search(r"\.(\s|$)", text):
            break
    sentence = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(":")
    if len(sentence) <= _SUMMARY_LENGTH:
        return sentence
    # a long sentence: its first clause of some length (a listing line, not the whole header)
    clause = next((m.start() for m in re.finditer(r": | \(|; |, ", sentence) if m.start() >= 20), None)
    return sentence if clause is None else sentence[:clause]


def _packaged_name(path: Path) -> str | None:
    """`conf/experiments/x.yaml` -> `experiments/x`; None for a path that cannot name a packaged config
    (absolute, or climbing out with `..`)."""
    if path.is_absolute() or ".." in path.parts:
        return None
    parts = list(path.parts)
    if parts[:1] == ["conf"]:
        parts = parts[1:]
    if not parts:
        return None
    key = Path(*parts)
    return (key.with_suffix("") if key.suffix in _SUFFIXES else key).as_posix()
