from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from msccl.cli import build_cli
from tests.conftest import REPO, TINY_SYNTHETIC

# 4 validation images, 2 per batch: one batch per rank under 2-process DDP, every image seen once
VALIDATION = ["--data.init_args.num_val=4", "--data.init_args.val_batch_size=2", "--trainer.accelerator=cpu"]


def _msccl(arguments: list[str], folder) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "msccl", *arguments]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_ddp_two_processes_fit_and_validate_like_one_process(tmp_path, monkeypatch):
    # SyncBatchNorm raises on CPU under torch.distributed: it stays off here (it is for GPUs)
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.sync_batchnorm=false"]
    _msccl(["fit", *TINY_SYNTHETIC, *VALIDATION, *ddp, "--run_dir=fit"], tmp_path)
    # each rank trained on half of the 12 images: one batch of 4 per epoch (3 on one process)
    checkpoint = tmp_path / "fit" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 1

    # validation on two processes (each rank's BatchNorm statistics come from the same checkpoint)
    from_checkpoint = [*TINY_SYNTHETIC, *VALIDATION, f"--ckpt_path={checkpoint}"]
    validated = _msccl(["validate", *from_checkpoint, *ddp, "--run_dir=ddp"], tmp_path)
    assert "sync_dist=True" not in validated.stderr  # no Lightning warning about the epoch-level metrics
    distributed = json.loads((tmp_path / "ddp" / "summary.json").read_text())  # written by rank 0
    monkeypatch.chdir(tmp_path)
    # one thread as each DDP process had: the barely trained net has near ties that thread counts flip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = build_cli(["validate", *from_checkpoint, "--run_dir=one"]).trainer.callback_metrics
    finally:
        torch.set_num_threads(threads)
    per_class = [key for key in distributed if key.startswith("val/IoU/")]
    assert per_class and set(per_class) == {key for key in metrics if key.startswith("val/IoU/")}
    # one confusion matrix summed over ranks: the split's scores do not depend on the process count
    # (val/loss is a mean of batch means, which depends on how images are grouped: not compared)
    for key in ["val/mIoU", "val/pixel_accuracy", *per_class]:
        assert metrics[key].item() == pytest.approx(distributed[key], abs=1e-9), key
