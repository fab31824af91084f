"""The `msccl` entry point: offline defaults only there, never over the user's or a W&B agent's values;
`--help` lists every subcommand, `--version`; the package ships its type marker and licence files."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import msccl
from msccl._offline import OFFLINE_DEFAULTS, set_offline_defaults
from msccl.cli import main
from msccl.commands import EXTRA_COMMANDS, HELP_WIDTH, LIGHTNING_COMMANDS, usage
from tests.conftest import REPO

# every package, the modules a library user imports and the commands' modules
LIBRARY_MODULES = (
    "msccl, msccl.contrastive, msccl.models, msccl.data, msccl.training, msccl.cli, msccl.training.sweep, "
    "msccl.data.check, msccl.models.export, msccl.commands.data, msccl.commands.export, msccl.commands.sweep"
)

THIRD_PARTY = (
    "torch, torchvision, lightning, timm, segmentation_models_pytorch, albumentations, optuna, wandb"
)


def test_importing_msccl_changes_no_environment_variable_and_the_entry_point_sets_the_defaults():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    code = (
        # the libraries msccl builds on set a few variables of their own (torch: LD_LIBRARY_PATH ...)
        f"import os, sys, {THIRD_PARTY}; before = dict(os.environ)\n"
        f"import {LIBRARY_MODULES}\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print('changed:', changed)\n"
        "from msccl.__main__ import main\n"
        "sys.argv = ['msccl', '--version']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "print('set:', os.environ['HF_HUB_OFFLINE'], os.environ['WANDB_MODE'], "
        "os.environ['NO_ALBUMENTATIONS_UPDATE'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "changed: []" in lines
    assert f"msccl {msccl.__version__}" in lines
    assert "set: 1 offline 1" in lines


def test_offline_defaults_never_override_the_user_nor_a_wandb_agent():
    fresh: dict[str, str] = {}
    set_offline_defaults(fresh)
    assert fresh == OFFLINE_DEFAULTS
    user = {"WANDB_MODE": "online", "HF_HUB_OFFLINE": "0"}
    set_offline_defaults(user)
    assert user == {"WANDB_MODE": "online", "HF_HUB_OFFLINE": "0", "NO_ALBUMENTATIONS_UPDATE": "1"}
    agent = {"WANDB_SWEEP_ID": "abc123", "WANDB_RUN_ID": "run1"}
    set_offline_defaults(agent)
    assert "WANDB_MODE" not in agent and agent["HF_HUB_OFFLINE"] == "1"


def test_help_lists_every_subcommand_with_its_whole_summary_and_version_prints_it(capsys, monkeypatch):
    monkeypatch.setitem(EXTRA_COMMANDS, "example", "msccl._offline:set_offline_defaults")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    listed = lines[lines.index("commands:") + 1 :]
    commands: dict[str, str] = {}
    for line in listed:  # "  NAME [SUB]  summary", wrapped lines indented under the summary
        if line[2] != " ":
            name, summary = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            commands[name] = summary
        else:
            commands[name] += " " + line.strip()
    data = {"data check", "data browse", "data example"}  # every subcommand of `msccl data`
    config = {"config list", "config copy"}
    assert set(commands) == {*LIGHTNING_COMMANDS, *data, *config, "export", "sweep", "plot", "example"}
    assert commands["sweep"] == "a W&B sweep file run locally with Optuna"
    assert commands["data check"] == "walk a dataset tree and list every problem in it, before training does"
    assert commands["example"].startswith("Offline defaults of the `msccl` command")  # a new entry shows up
    assert commands["example"].endswith("no albumentations update check")  # its whole first paragraph
    assert all(len(line) <= HELP_WIDTH for line in lines)
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"msccl {msccl.__version__}\n"


def test_help_and_config_list_import_neither_torch_nor_lightning():
    """`msccl --help` answers in a fraction of a second: it reads the commands' docstrings from source."""
    for command in (["--help"], ["config", "list"], ["--version"]):
        code = (
            "import sys\n"
            f"sys.argv = ['msccl', *{command!r}]\n"
            "from msccl.__main__ import main\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
            "print('loaded:', sorted({'torch', 'lightning', 'numpy', 'albumentations'} & set(sys.modules)))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.splitlines()[-1] == "loaded: []", command
    help_text = subprocess.run(
        [sys.executable, "-m", "msccl", "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert help_text == usage() + "\n" and "data example" in help_text


def test_package_metadata_ships_the_type_marker_licence_and_citation():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'msccl = "msccl.__main__:main"' in pyproject
    assert 'msccl = ["py.typed", "conf/*.yaml", "conf/**/*.yaml"]' in pyproject  # see test_wheel.py
    assert (REPO / "msccl" / "py.typed").is_file()
    assert "MIT License" in (REPO / "LICENSE").read_text()
    citation = (REPO / "CITATION.cff").read_text()
    assert "2203.13409" in citation and "Pissas" in citation and f'version: "{msccl.__version__}"' in citation
    assert f"## [{msccl.__version__}]" in (REPO / "CHANGELOG.md").read_text()


def test_constraints_pin_every_declared_dependency_within_its_declared_range():
    """pyproject.toml declares ranges, constraints.txt the exact tested versions: they must agree."""
    from packaging.requirements import Requirement
    from setuptools.config.pyprojecttoml import read_configuration

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    project = read_configuration(REPO / "pyproject.toml")["project"]
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = {canonical(n): v for n, v in (line.split("==") for line in lines if "==" in line)}
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    requirements = [Requirement(r) for r in [*project["dependencies"], *extras] if not r.startswith("msccl")]
    assert {canonical(r.name) for r in requirements} >= {"torch", "pyyaml", "huggingface-hub", "safetensors"}
    for requirement in requirements:
        pinned = pins.get(canonical(requirement.name))
        assert pinned and requirement.specifier.contains(pinned), f"{requirement} vs constraints {pinned}"
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")  # the machines' local wheels
