"""The layering of docs/architecture.md, read from the imports (tests/import_graph.py draws it)."""

from __future__ import annotations

import re

from tests.conftest import REPO
from tests.import_graph import FLOORS, cycles, floor, module_graph, room, room_arrows, wrong_arrows


def test_every_import_points_to_a_lower_floor():
    wrong = wrong_arrows(room_arrows(module_graph()))
    assert not wrong, "imports that point up or sideways: " + "; ".join(
        f"{a} -> {b} ({', '.join(why)})" for (a, b), why in wrong.items()
    )


def test_no_module_imports_itself_through_a_circle():
    assert cycles(module_graph()) == []


def test_every_room_is_on_a_floor():
    for module in module_graph():
        floor(room(module))  # raises, naming the room


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The checker would pass vacuously if it missed imports inside functions or relative ones."""
    package = tmp_path / "msccl"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("from .base import X\n")
    (package / "data" / "base.py").write_text("def f():\n    from msccl.training import module\n")
    (package / "training").mkdir()
    (package / "training" / "__init__.py").write_text("")
    (package / "training" / "module.py").write_text("from ..data import base\n")
    graph = module_graph(package)
    assert graph["msccl.data"] == {"msccl.data.base"}
    assert graph["msccl.data.base"] == {"msccl.training.module"}
    assert graph["msccl.training.module"] == {"msccl.data.base"}
    assert ("data", "training") in wrong_arrows(room_arrows(graph))
    assert cycles(graph) == [["msccl.data.base", "msccl.training.module", "msccl.data.base"]]
    assert len({name for rooms in FLOORS for name in rooms}) == sum(map(len, FLOORS))


def test_docs_architecture_shows_these_floors():
    """docs/architecture.md's list of floors is FLOORS: the picture stays true when a floor changes."""
    text = (REPO / "docs" / "architecture.md").read_text()
    shown = [
        tuple(re.findall(r"[\w]+", line.split("(")[0].removeprefix("floor")))[1:]
        for line in text.splitlines()
        if re.match(r"floor \d+  ", line)
    ]
    assert shown == list(FLOORS)
