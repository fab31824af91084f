"""`msccl config list`: the configs that ship with msccl (usable by name: `--config synthetic`).
`msccl config copy NAME DIR`: copy a packaged config, and the configs it builds on, into DIR to edit.

    msccl config list
    msccl config copy synthetic my_conf                  (writes my_conf/synthetic.yaml)
    msccl fit --config my_conf/synthetic.yaml

A copy keeps the config's path under `conf/` (`experiments/cityscapes_hrnet_w48` goes to
`DIR/experiments/cityscapes_hrnet_w48.yaml`) and brings along every file it includes with `config:`
(`_base.yaml` there), so its relative includes keep working. Nothing existing is overwritten.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from msccl.commands import listing_line
from msccl.commands.flags import CommandParser
from msccl.configs import CONFIG_ROOT, ConfigNotFoundError, config_summary, packaged_config, packaged_configs

__all__ = ["included_configs", "main"]


def included_configs(name: str) -> list[str]:
    """`name` and every packaged config it includes through `config:` keys, recursively (names, `name`
    first)."""
    names, pending = [], [name]
    while pending:
        current = pending.pop(0)
        if current in names:
            continue
        names.append(current)
        path = packaged_config(current)
        includes = (yaml.safe_load(path.read_text()) or {}).get("config") or []
        for include in [includes] if isinstance(includes, str) else includes:
            target = (path.parent / include).resolve()
            pending.append(target.relative_to(CONFIG_ROOT).with_suffix("").as_posix())
    return names


def _list() -> int:
    names = packaged_configs()
    width = max(map(len, names))
    for name in names:
        print(listing_line(name.ljust(width), config_summary(name)))
    return 0


def _copy(name: str, folder: Path) -> int:
    try:
        names = included_configs(name)
    except ConfigNotFoundError as error:
        print(f"msccl: error: {error}", file=sys.stderr)
        return 1
    sources = [packaged_config(n) for n in names]
    targets = [folder / source.relative_to(CONFIG_ROOT) for source in sources]
    existing = [str(target) for target in targets if target.exists()]
    if existing:  # checked before writing anything: a copy never half-happens
        print(
            f"msccl: error: {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: nothing "
            "copied (choose another folder, or move the file away)",
            file=sys.stderr,
        )
        return 1
    for source, target in zip(sources, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        print(f"wrote {target}")
    return 0


def main(argv: list[str]) -> int:
    """`msccl config list|copy ...`: 0 on success, 1 when the name is unknown or a file exists."""
    parser = CommandParser(prog="msccl config", description="The configs that ship with msccl.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every packaged config with the first line of its header")
    copy = commands.add_parser("copy", help="copy a packaged config (and what it includes) into a folder")
    copy.add_argument("name", help="a name from `msccl config list`, e.g. synthetic or data/folder")
    copy.add_argument("folder", type=Path, help="where the copy goes (created if needed)")
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list()
    return _copy(args.name, args.folder)
