from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.cli import LightningCLI

from msccl.cli import MscclCLI, build_cli
from msccl.training import SegmentationModule
from tests.conftest import REPO, TINY_SYNTHETIC

# The private LightningCLI methods MscclCLI overrides or calls: (name, its parameters after self, the
# LightningCLI method that calls it, or None where only msccl calls it; what in msccl depends on it). A
# Lightning release that renames one would leave msccl's override never called, in silence.
PRIVATE_LIGHTNING_CLI_METHODS = [
    (
        "_prepare_subcommand_parser",
        ["klass", "subcommand", "kwargs"],
        "_add_subcommands",
        "MscclCLI._prepare_subcommand_parser (adds --run_dir, and predict's --output)",
    ),
    (
        "_parse_ckpt_path",
        [],
        "__init__",
        "MscclCLI._parse_ckpt_path (resolves --ckpt_path, applies the given settings over the checkpoint's)",
    ),
    (
        "_run_subcommand",
        ["subcommand"],
        "__init__",
        "MscclCLI._run_subcommand (removes a failed run's new directory, disarms the signal handlers)",
    ),
    (
        "_parser",
        ["subcommand"],
        None,
        "MscclCLI._parse_ckpt_path and before_instantiate_classes (call it for a subcommand's parser)",
    ),
]


@pytest.mark.parametrize(
    ("name", "parameters", "caller", "user"),
    PRIVATE_LIGHTNING_CLI_METHODS,
    ids=[entry[0] for entry in PRIVATE_LIGHTNING_CLI_METHODS],
)
def test_the_private_lightning_cli_methods_msccl_relies_on_are_still_there(name, parameters, caller, user):
    method = getattr(LightningCLI, name, None)
    assert callable(method), f"lightning.pytorch.cli.LightningCLI.{name} is gone: {user} depends on it"
    signature = inspect.signature(method)
    assert list(signature.parameters)[1:] == parameters, (
        f"LightningCLI.{name}{signature} no longer takes {parameters}: {user} depends on them"
    )
    if caller is not None:
        assert f"self.{name}(" in inspect.getsource(getattr(LightningCLI, caller)), (
            f"LightningCLI.{caller} no longer calls {name}: {user} would never run"
        )
    if name in vars(MscclCLI):  # msccl's override takes what Lightning passes
        assert list(inspect.signature(vars(MscclCLI)[name]).parameters)[1:] == parameters


def _checkpoints(run_root: Path) -> list[Path]:
    return sorted(run_root.glob("runs/synthetic/version_*/checkpoints/*.ckpt"))


def test_fit_writes_one_run_directory_then_validate_and_test_from_checkpoint(in_tmp_dir, capsys):
    build_cli(["fit", *TINY_SYNTHETIC])
    run_dirs = list(in_tmp_dir.glob("runs/synthetic/version_*"))
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert (run_dir / "config.yaml").is_file()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for term in ("train/ce", "train/contrastive", "train/contrastive_weight", "val/mIoU", "val/IoU/wire"):
        assert term in header, term
    for scale in range(4):  # every contrastive term of conf/synthetic.yaml is logged
        assert f"train/contrastive/ms/s{scale}" in header and f"train/contrastive/samples/s{scale}" in header
    assert {"train/contrastive/cs/s0-s3", "train/contrastive/cs/s0-s2"} <= set(header)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert torch.load(last, weights_only=False)["global_step"] == 3
    restored = SegmentationModule.load_from_checkpoint(last)  # no config needed: hparams travel along
    assert restored.net.taps[0].channels == 64 and restored.class_names[-1] == "wire"
    assert sorted(p.name for p in in_tmp_dir.iterdir()) == ["runs"]  # nothing written elsewhere
    validate = build_cli(["validate", *TINY_SYNTHETIC, f"--ckpt_path={last}"])
    assert "val/mIoU" in validate.trainer.callback_metrics
    test = build_cli(["test", *TINY_SYNTHETIC, f"--ckpt_path={last}"])
    metrics = test.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/mIoU"]) <= 1.0
    assert "test/IoU/background" in metrics


def test_fit_prints_the_iou_table_with_class_names(in_tmp_dir, capfd):
    build_cli(["fit", *TINY_SYNTHETIC, "--trainer.enable_progress_bar=true"])  # as `make demo` runs
    printed = "".join(capfd.readouterr())
    assert "validation after 3 steps" in printed
    for name in ("background", "fine_stripes", "wire", "mIoU"):
        assert name in printed


def test_unknown_config_key_fails_with_the_key_named(in_tmp_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_cli(["fit", *TINY_SYNTHETIC, "--model.init_args.aux_wieght=0.3"])
    assert exit_info.value.code != 0
    assert "aux_wieght" in capsys.readouterr().err


def test_typo_inside_a_config_file_is_rejected(in_tmp_dir, capsys):
    config = yaml.safe_load((REPO / "conf" / "synthetic.yaml").read_text())
    config["data"]["init_args"]["num_trian"] = 3
    bad = in_tmp_dir / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):
        build_cli(["fit", f"--config={bad}"], run=True)
    assert "num_trian" in capsys.readouterr().err


def test_print_config_is_complete_and_reproducible(in_tmp_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_cli(["fit", *TINY_SYNTHETIC, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    init = printed["model"]["init_args"]
    assert init["net"]["class_path"] == "msccl.models.FPN"
    assert init["net"]["init_args"]["pyramid_channels"] == 32
    assert printed["data"]["init_args"]["image_size"] == 32
    assert printed["seed_everything"] == 0
    # the printed config alone reproduces itself
    saved = in_tmp_dir / "printed.yaml"
    saved.write_text(yaml.safe_dump(printed))
    with pytest.raises(SystemExit):
        build_cli(["fit", f"--config={saved}", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == printed
