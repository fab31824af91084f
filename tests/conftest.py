"""Shared fixtures: tiny sizes so the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import random
import signal
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


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler (KeyboardInterrupt) for the test, whatever the suite started with: a
    suite started in the background by a non-interactive shell (`(make test &)`) inherits SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shuffle",
        type=int,
        default=None,
        metavar="SEED",
        help="run the tests in an order shuffled with SEED (no test may depend on another's leftovers)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--shuffle")
    if seed is not None:
        random.Random(seed).shuffle(items)
