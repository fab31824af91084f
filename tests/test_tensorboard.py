"""conf/logging/tensorboard.yaml: a tiny fit writes TensorBoard event files into its run directory."""

from __future__ import annotations

import pytest

from msccl.cli import build_cli
from tests.conftest import REPO, TINY_SYNTHETIC

pytest.importorskip("tensorboard", reason="the `tensorboard` extra is not installed")


def test_tensorboard_config_writes_event_files_in_the_run_directory(in_tmp_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = REPO / "conf" / "logging" / "tensorboard.yaml"
    cli = build_cli(["fit", *TINY_SYNTHETIC, f"--config={config}"])
    run_dir = in_tmp_dir / "runs" / "synthetic" / "version_0"
    assert cli.run_dir.resolve() == run_dir.resolve()
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, sorted(p.name for p in run_dir.iterdir())
    assert (run_dir / "metrics.csv").is_file()  # the CSV log stays (msccl plot, summary.json)
    scalars = EventAccumulator(str(run_dir)).Reload().Tags()["scalars"]
    assert {"train/loss", "val/mIoU"} <= set(scalars), scalars
    assert not (in_tmp_dir / "lightning_logs").exists()  # nothing outside the run directory
