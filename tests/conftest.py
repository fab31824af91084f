"""Shared fixtures: tiny sizes so the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from msccl._offline import set_offline_defaults

# The suite runs offline as the `msccl` command does (importing msccl sets nothing); before the test
# modules import huggingface_hub, wandb and albumentations, which read these at import.
set_offline_defaults()

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_CONFIG = REPO / "conf" / "synthetic.yaml"

# Overrides that shrink conf/synthetic.yaml to a seconds-long run.
TINY_SYNTHETIC = [
    f"--config={SYNTHETIC_CONFIG}",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.log_every_n_steps=1",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.image_size=32",
    "--data.init_args.num_train=12",
    "--data.init_args.num_val=4",
    "--data.init_args.num_test=4",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=0",
    "--model.init_args.net.init_args.pyramid_channels=32",
    "--model.init_args.net.init_args.segmentation_channels=32",
]


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Trainer for in-process tests: no logger, checkpoints, progress bar, summary or sanity check."""
    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(**{**quiet, **kwargs})


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh directory: configs write their run directories relative to it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
