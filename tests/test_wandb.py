from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, TINY_SYNTHETIC

WANDB_CONFIG = REPO / "conf" / "logging" / "wandb.yaml"


def test_offline_wandb_run_logs_everything_inside_the_run_directory(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    # no WANDB_MODE, no account, a fresh HOME: msccl must run offline and write nowhere but the run dir
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "msccl", "fit", *TINY_SYNTHETIC, f"--config={WANDB_CONFIG}"]
    command.append("--trainer.log_every_n_steps=1")
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    run_dir = work / "runs" / "synthetic" / "version_0"
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    (history,) = offline_run.glob("run-*.wandb")
    logged = history.read_bytes()
    for key in ("train/loss", "train/ce", "lr-SGD", "val/mIoU", "val/IoU/background", "val/examples"):
        assert key.encode() in logged, key
    assert b"synthetic/version_0" in logged  # the W&B run is named after its run directory
    assert len(list(offline_run.glob("files/media/images/val/examples_*.png"))) == 4
    assert len(list(offline_run.glob("files/media/images/mask/val/examples_*.mask.png"))) == 8  # pred + true
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()

    outside = [p for p in work.rglob("*") if p.is_file() and run_dir not in p.parents]
    assert outside == []
    assert [p for p in home.rglob("*") if "wandb" in str(p.relative_to(home)).lower()] == []
