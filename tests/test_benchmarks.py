"""The benchmark scripts still run end to end (at tiny sizes; their real sizes stay out of the suite)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO, TINY_SYNTHETIC


def load_benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ablation_trains_every_arm_and_writes_tables_paired_statistics_and_plots(tmp_path: Path, capsys):
    ablation = load_benchmark("ablation")
    budget = [arg for arg in TINY_SYNTHETIC if not arg.startswith("--config")]
    budget += [
        "--data.init_args.image_size=64",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
    ]
    # one real seed on the context layout (64 pixels: room for objects inside the frames' margin)
    assert (
        ablation.main(["--seeds", "0", "--layout", "context", "--output", str(tmp_path), "--budget", *budget])
        == 0
    )
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["layout"] == "context" and record["pairs"] == []  # one seed: nothing to pair
    assert [run["arm"] for run in record["runs"]] == list(ablation.ARMS)
    assert all(math.isfinite(run["miou"][-1]) for run in record["runs"])
    # the CE arm really trains without the loss, the others with it, all on the context layout
    logs = {run["arm"]: (Path(run["run_dir"]) / "metrics.csv").read_text() for run in record["runs"]}
    assert "train/contrastive/" not in logs["CE"]
    assert "train/contrastive/cs" not in logs["CE + MS"] and "train/contrastive/ms" in logs["CE + MS"]
    assert "train/contrastive/cs" in logs["CE + MS + CS"]
    for arm in ("CE + PC", "CE + PC + memory"):  # pixel contrast in place of MS + CS
        assert "train/contrastive/hard_fraction" in logs[arm] and "train/contrastive/ms" not in logs[arm]
    configs = {run["arm"]: (Path(run["run_dir"]) / "config.yaml").read_text() for run in record["runs"]}
    assert "memory_size: 0" in configs["CE + PC"] and "memory_size: 0" not in configs["CE + PC + memory"]
    assert all("layout: context" in (Path(r["run_dir"]) / "config.yaml").read_text() for r in record["runs"])
    # where the errors go: each arm's last confusion matrix, as % of the true class's pixels
    ce_dir = Path(next(r["run_dir"] for r in record["runs"] if r["arm"] == "CE"))
    header, *rows = [line.split(",") for line in (ce_dir / "val_confusion.csv").read_text().splitlines()]
    red = next(row for row in rows if row[0] == "object_in_red_frame")
    expected = 100 * float(red[header.index("background")]) / max(sum(map(float, red[1:])), 1.0)
    results = (tmp_path / "results.md").read_text()
    row = next(
        line for line in results.splitlines() if line.startswith("| object_in_red_frame -> background |")
    )
    assert row.split(" | ")[1] == f"{expected:.2f}" and len(row.split(" | ")) == 1 + len(ablation.ARMS)

    # a second seed, made from the first by shifting each arm's mIoU (what is tested here is the pairing,
    # the statistics and the reuse of finished runs; tests/test_paired_stats.py tests the statistics)
    shifts = {"CE": 0.0, "CE + PC": 0.01, "CE + PC + memory": 0.03, "CE + MS": 0.05, "CE + MS + CS": 0.02}
    for run in record["runs"]:
        copy = dict(run, seed=1, run_dir=run["run_dir"].replace("seed_0", "seed_1"))
        copy["miou"] = [m + 100 * shifts[run["arm"]] for m in run["miou"]]
        Path(copy["run_dir"]).mkdir(parents=True)
        metrics = [
            line.split(",") for line in (Path(run["run_dir"]) / "metrics.csv").read_text().splitlines()
        ]
        column = metrics[0].index("val/mIoU")
        for row in metrics[1:]:
            if row[column]:
                row[column] = str(float(row[column]) + shifts[run["arm"]])
        (Path(copy["run_dir"]) / "metrics.csv").write_text("\n".join(",".join(row) for row in metrics) + "\n")
        (Path(copy["run_dir"]) / "ablation_run.json").write_text(json.dumps(copy))
    capsys.readouterr()
    assert (
        ablation.main(
            [
                "--seeds",
                "0",
                "1",
                "--reuse",
                "--layout",
                "context",
                "--output",
                str(tmp_path),
                "--budget",
                *budget,
            ]
        )
        == 0
    )
    pairs = {
        (p["baseline"], p["arm"]): p for p in json.loads((tmp_path / "results.json").read_text())["pairs"]
    }
    assert list(pairs) == ablation.PAIRS  # every arm ran, so every pair is reported
    ms = pairs["CE", "CE + MS"]
    final = {run["arm"]: run["miou"][-1] for run in record["runs"]}
    assert ms["seeds"] == [0, 1] and ms["wins"] == sum(d > 0 for d in ms["differences"])
    assert ms["differences"] == pytest.approx(
        [final["CE + MS"] - final["CE"], final["CE + MS"] - final["CE"] + 5]
    )
    assert ms["low"] < ms["mean"] < ms["high"] and 0 <= ms["t_p"] <= 1
    same_sign = min(ms["differences"]) * max(ms["differences"]) > 0
    assert ms["wilcoxon_p"] == (0.5 if same_sign else 1.0)  # n = 2: 2 of the 4 sign sets as extreme
    out = capsys.readouterr().out
    assert all(f"| {arm} |" in out for arm in ablation.ARMS)
    assert "| CE + MS vs CE | 2 |" in out and "| CE + MS + CS vs CE + MS | 2 |" in out
    for image in ("learning_curves.png", "paired.png"):
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a PNG


def test_ablation_refuses_an_arm_whose_loss_or_config_this_checkout_lacks(
    tmp_path: Path, capsys, monkeypatch
):
    ablation = load_benchmark("ablation")
    monkeypatch.setitem(
        ablation.ARMS,
        "CE + missing",
        [
            "--model.init_args.contrastive.class_path=msccl.contrastive.NoSuchLoss",
            "--config=conf/no_such.yaml",
        ],
    )
    assert ablation.main(["--arms", "CE", "CE + missing", "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error == (
        "ablation.py: error: arm 'CE + missing' needs class msccl.contrastive.NoSuchLoss, "
        "config file conf/no_such.yaml, which this checkout lacks"
    )
    assert not (tmp_path / "out").exists()  # refused before anything is written
    assert ablation.missing_requirements("CE + MS + CS") == [] and ablation.missing_requirements("CE") == []


@pytest.mark.slow
def test_gpu_checks_script_runs_end_to_end_in_its_cpu_smoke_mode(tmp_path: Path):
    # benchmarks/gpu_checks.sh --cpu-smoke: the Triton gate under the interpreter, train_step.py (interleaved
    # pairs) and evaluation.py at toy sizes, their tables gathered in one results.md, all in one folder
    out = tmp_path / "out"
    command = ["bash", "benchmarks/gpu_checks.sh", "--cpu-smoke"]
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "OUT": str(out)}
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    files = [path for path in out.rglob("*") if path.is_file()]
    assert len(files) <= 8 and all(len(path.relative_to(out).parts) <= 2 for path in files), files
    results = (out / "results.md").read_text()
    for name in ("triton_gate", "train_step", "evaluation"):
        assert f"| {name} | 0 |" in results, results
    lines = results.splitlines()
    # 16 kernel cases (2 precisions x same/cross x N 1, 17 x 2 temperatures) and 4 whole-loss cases
    assert sum(" | PASS | " in line for line in lines) == 20 and "| FAIL |" not in results, results
    timed = [line for line in lines if line.startswith("| triton-tf32 | typical |") and "PASS" not in line]
    assert timed and float(timed[0].split("|")[3]) > 0  # what passed is timed
    assert "not verified: tf32 (smoke run)" in results  # a smoke run never proposes a VERIFIED_TRITON entry
    row = next(line for line in results.splitlines() if line.startswith("| FPN |"))
    cells = [cell.strip("* ") for cell in row.strip("|").split("|")]
    time_ratio, iqr = (float(v.strip("[]")) for v in cells[3].split())  # "median [IQR]"
    assert time_ratio > 0 and iqr >= 0 and float(cells[8]) > 0
    speed_ups = [line for line in results.splitlines() if line.startswith("| 8 |")]
    assert speed_ups and float(speed_ups[0].split("|")[-2]) < 1e-4  # batched windows: the same logits
