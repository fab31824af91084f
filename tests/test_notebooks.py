"""Notebooks are stored without outputs, and `make test` executes them (pytest's nbmake plugin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from msccl._offline import OFFLINE_DEFAULTS
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_first_sets_the_offline_defaults_of_the_msccl_command(path: Path):
    """A notebook is an application: its first code cell sets what `msccl` sets (a value set before wins),
    so albumentations, huggingface_hub and wandb stay offline when the later cells import them."""
    first = "".join(
        next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")["source"]
    )
    report = (
        "import json, os, sys; print(json.dumps([{k: os.environ.get(k) for k in %r}, sorted(sys.modules)]))"
    )
    environment = {k: v for k, v in os.environ.items() if k not in OFFLINE_DEFAULTS}
    for preset in ({}, {"WANDB_MODE": "online"}):
        code = first + "\n" + report % list(OFFLINE_DEFAULTS)
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=environment | preset,
            cwd=path.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        values, modules = json.loads(result.stdout.splitlines()[-1])
        assert values == OFFLINE_DEFAULTS | preset, f"{path.name}: its first code cell sets {values}"
        assert not {"albumentations", "wandb", "huggingface_hub"} & set(modules)  # set before they load
