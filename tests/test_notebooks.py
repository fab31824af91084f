"""Notebooks are stored without outputs, and `make test` executes them (pytest's nbmake plugin)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_suite_executes_the_notebooks(pytestconfig: pytest.Config):
    assert NOTEBOOKS and "notebooks" in pytestconfig.getini("testpaths")
    assert "--nbmake" in pytestconfig.getini("addopts")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_stored_without_outputs(path: Path):
    cells = json.loads(path.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code, f"{path} has no code"
    stored = [i for i, cell in enumerate(code) if cell["outputs"] or cell["execution_count"] is not None]
    assert not stored, (
        f"{path.name}: code cells {stored} hold outputs or execution counts; clear them before committing "
        "(Jupyter: Edit > Clear Outputs of All Cells, or `jupyter nbconvert --clear-output --inplace`)"
    )
