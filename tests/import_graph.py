"""The import graph of msccl, read from the source with `ast` (nothing is imported).

A *room* is a subpackage of msccl (`training`, `data`, ...) or a top-level module (`cli`, `api`, ...).
Every import counts, also one inside a function: a lazy import is still a dependency.
`.venv/bin/python tests/import_graph.py` prints the arrows between rooms, each with the imports behind it,
and says which ones break the layering; tests/test_architecture.py asserts there are none.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "msccl"

# The floors, top to bottom: a room may import a room on a lower floor only. The rooms of one floor
# do not import each other. `msccl` is the package's own __init__ (a facade with lazy attributes).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("msccl",),
    ("cli",),
    ("commands",),
    ("api",),
    ("training",),
    ("plots",),
    ("models", "data"),
    ("contrastive",),
    ("configs", "progress", "_offline", "_version", "labels"),
)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """{"msccl.data.base": path, "msccl.data": path of its __init__, ...}."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The msccl modules that module `name` imports (`from a.b import c` is a.b.c where c is a module)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import msccl.data.base as b` names a module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the msccl modules it imports."""
    found = modules(package)
    return {name: set(imports(name, path, set(found))) for name, path in found.items()}


def room(module: str) -> str:
    """msccl.training.callbacks.schedule -> training; msccl -> msccl."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def room_arrows(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(room, room it imports) -> the module imports behind that arrow."""
    arrows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, targets in graph.items():
        for target in sorted(targets):
            if room(module) != room(target):
                arrows[room(module), room(target)].append(f"{module} -> {target}")
    return dict(sorted(arrows.items()))


def floor(name: str) -> int:
    for level, rooms in enumerate(FLOORS):
        if name in rooms:
            return level
    raise KeyError(f"room {name!r} is on no floor of FLOORS in {__file__}: add it")


def wrong_arrows(arrows: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], list[str]]:
    """The arrows that do not point to a lower floor."""
    return {pair: why for pair, why in arrows.items() if floor(pair[0]) >= floor(pair[1])}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Module-level import circles (each once, as the path that closes it)."""
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def main() -> int:
    graph = module_graph()
    arrows = room_arrows(graph)
    wrong = wrong_arrows(arrows)
    for level, rooms in enumerate(FLOORS):
        for name in rooms:
            below = sorted({b for (a, b) in arrows if a == name}, key=floor)
            print(f"floor {level} {name:>12} -> {', '.join(below) or '(nothing)'}")
    for (a, b), why in wrong.items():
        print(f"\nUP {a} -> {b}:\n  " + "\n  ".join(why))
    for circle in cycles(graph):
        print("\nCIRCLE " + " -> ".join(circle))
    return 1 if wrong or cycles(graph) else 0


if __name__ == "__main__":
    sys.exit(main())
