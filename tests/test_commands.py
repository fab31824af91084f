"""Issue 22 items 2 and 4: packaged configs by name (`--config synthetic`), `msccl config list|copy`, one
flag style with the other spelling as an alias, a missing or unknown --config in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import msccl
from msccl.cli import build_cli, main
from msccl.commands.config import included_configs
from msccl.commands.flags import CommandParser
from msccl.configs import CONFIG_ROOT, ConfigNotFoundError, config_path, config_summary, packaged_configs
from tests.conftest import REPO, TINY_SYNTHETIC

TINY = [a for a in TINY_SYNTHETIC if not a.startswith("--config")]


def test_packaged_configs_are_the_checkouts_conf_folder_and_resolve_by_name(in_tmp_dir):
    assert CONFIG_ROOT == (REPO / "conf").resolve()  # msccl/conf is a link to conf/: one copy of each file
    assert set(packaged_configs()) == {
        p.relative_to(REPO / "conf").with_suffix("").as_posix() for p in (REPO / "conf").rglob("*.yaml")
    }
    synthetic = REPO / "conf" / "synthetic.yaml"
    for name in ("synthetic", "synthetic.yaml", "conf/synthetic.yaml"):  # cwd is outside the checkout
        assert config_path(name) == synthetic
    assert config_path("experiments/ce_only/cityscapes_hrnet_w48") == (
        REPO / "conf" / "experiments" / "ce_only" / "cityscapes_hrnet_w48.yaml"
    )
    mine = in_tmp_dir / "synthetic"  # an existing path wins over a packaged name
    mine.write_text("seed_everything: 1\n")
    assert config_path("synthetic").resolve() == mine and msccl.config_path is config_path
    with pytest.raises(ConfigNotFoundError, match="did you mean experiments/cityscapes_hrnet_w48"):
        config_path("experiments/cityscapes_hrnet_w84")
    with pytest.raises(ConfigNotFoundError, match="msccl config list"):
        config_path("/no/such/file.yaml")


def test_packaged_names_compose_and_follow_their_relative_includes(in_tmp_dir, capsys):
    """`--config synthetic --config data/folder` composes as the paths do; a recipe that includes
    `_base.yaml` and a CE-only twin that includes `../X.yaml` resolve through their packaged files."""
    with pytest.raises(SystemExit):
        build_cli(
            [
                "fit",
                "--config",
                "synthetic",
                "--config=data/folder",
                "--data.init_args.root=x",
                "--print_config",
            ]
        )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "msccl.data.FolderSegmentation"
    assert printed["model"]["init_args"]["net"]["class_path"] == "msccl.models.FPN"  # from synthetic
    with pytest.raises(SystemExit):
        build_cli(["fit", "-c", "experiments/ce_only/cityscapes_hrnet_w48", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_steps"] == 120000  # from the recipe the twin includes (../X.yaml)
    assert printed["trainer"]["default_root_dir"] == "runs/cityscapes_hrnet_w48_ce"  # the twin's own
    assert printed["model"]["init_args"]["contrastive"] is None
    assert printed["trainer"]["sync_batchnorm"] is True  # from _base.yaml, which the recipe includes


def test_a_missing_or_unknown_config_is_one_line(in_tmp_dir, capsys):
    for arguments, expected in (
        (["fit"], "msccl fit needs a config: --config NAME or FILE"),
        (["validate", "--ckpt_path=last"], "msccl validate needs a config"),
        (["fit", "--config", "synthtic"], "did you mean synthetic?"),
        (["fit", "--config=experiments/nothing"], "is neither a file nor a packaged config"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(arguments)
        error = capsys.readouterr().err
        assert exit_info.value.code == 1 and error.count("\n") == 1, error
        assert error.startswith("msccl: error: ") and expected in error
    assert not (in_tmp_dir / "runs").exists()


def test_config_list_names_every_packaged_config_with_its_first_header_sentence(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "list"])
    assert exit_info.value.code == 0
    listed = {
        line.split()[0]: line.split(None, 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line[2] != " "
    }
    assert list(listed) == packaged_configs()
    assert listed["synthetic"].startswith("The demo: a small FPN-ResNet18")
    assert config_summary("logging/wandb") == "Weights & Biases logging for any experiment"  # not its example


def test_config_copy_brings_the_included_files_and_never_overwrites(in_tmp_dir, capsys):
    name = "experiments/ce_only/cadis_ocrnet_hrnet_w48_task2"
    assert included_configs(name) == [
        name,
        "experiments/cadis_ocrnet_hrnet_w48_task2",
        "experiments/cadis_ocrnet_hrnet_w48",
        "experiments/ade20k_ocrnet_hrnet_w48",
        "experiments/_base",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "copy", name, "mine"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.count("wrote ") == 5
    copies = sorted(
        p.relative_to(in_tmp_dir / "mine").as_posix() for p in (in_tmp_dir / "mine").rglob("*.yaml")
    )
    assert copies == sorted(f"{n}.yaml" for n in included_configs(name))
    assert (in_tmp_dir / "mine" / f"{name}.yaml").read_text() == config_path(name).read_text()
    with pytest.raises(SystemExit):  # the copy's relative includes work from the copy
        build_cli(["fit", f"--config=mine/{name}.yaml", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["task"] == 2
    edited = in_tmp_dir / "mine" / "experiments" / "_base.yaml"
    edited.write_text("# mine\n")
    for arguments, expected in (
        (["copy", "experiments/cadis_ocrnet_hrnet_w48", "mine"], "_base.yaml already exist"),
        (["copy", "no_such", "mine"], "'no_such' is neither a file nor a packaged config"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["config", *arguments])
        error = capsys.readouterr().err
        assert exit_info.value.code == 1 and error.count("\n") == 1 and error.startswith("msccl: error: ")
        assert expected in error, error
    assert edited.read_text() == "# mine\n"  # nothing overwritten
    assert not (in_tmp_dir / "mine" / "no_such.yaml").exists()


def test_flags_are_written_with_underscores_and_the_dashed_spelling_is_an_alias():
    parser = CommandParser(prog="msccl example")
    commands = parser.add_subparsers(dest="command", required=True)
    browse = commands.add_parser("browse")
    browse.add_argument("--num_images", type=int, required=True)
    browse.add_argument("--dry_run", action="store_true")
    browse.add_argument("rest", nargs="*")
    for arguments in (
        ["browse", "--num_images", "3", "--dry_run"],
        ["browse", "--num-images", "3", "--dry-run"],
        ["browse", "--num-images=3", "--dry-run"],
    ):
        parsed = parser.parse_args(arguments)
        assert (parsed.num_images, parsed.dry_run, parsed.rest) == (3, True, [])
    # after `--` everything is a value; an unknown dashed flag is left for argparse to refuse
    assert parser.parse_args(["browse", "--num_images=1", "--", "--dry-run"]).rest == ["--dry-run"]
    with pytest.raises(SystemExit):
        parser.parse_args(["browse", "--num_images=1", "--no-such-flag"])


def test_every_command_uses_one_flag_style():
    """Every option of msccl's own commands is spelled with underscores (the dashed one is an alias)."""
    code = (
        "import argparse, sys\n"
        "seen = []\n"
        "original = argparse.ArgumentParser.add_argument\n"
        "def record(self, *names, **kwargs):\n"
        "    seen.extend(n for n in names if n.startswith('--'))\n"
        "    return original(self, *names, **kwargs)\n"
        "argparse.ArgumentParser.add_argument = record\n"
        "from msccl.commands import EXTRA_COMMANDS\n"
        "import importlib\n"
        "for target in EXTRA_COMMANDS.values():\n"
        "    module, function = target.split(':')\n"
        "    try:\n"
        "        getattr(importlib.import_module(module), function)(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('flags:', *seen)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    flags = out.stdout.splitlines()[-1].split()[1:]
    assert {
        "--num_images",
        "--crop_size",
        "--ckpt_path",
        "--size_divisor",
        "--sweep_dir",
        "--dry_run",
    } <= set(flags)
    assert not [flag for flag in flags if "-" in flag[2:]]
