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
def test_ablation_trains_every_variant_and_writes_table_and_plot(tmp_path: Path, capsys):
    ablation = load_benchmark("ablation")
    budget = [arg for arg in TINY_SYNTHETIC if not arg.startswith("--config")]
    assert ablation.main(["--seeds", "0", "--output", str(tmp_path), "--budget", *budget]) == 0

    record = json.loads((tmp_path / "results.json").read_text())
    assert [run["variant"] for run in record["runs"]] == list(ablation.VARIANTS)
    assert all(math.isfinite(run["miou"][-1]) for run in record["runs"])
    # the CE variant really trains without the loss, the others with it
    logs = {run["variant"]: (Path(run["run_dir"]) / "metrics.csv").read_text() for run in record["runs"]}
    assert "train/contrastive/" not in logs["CE"]
    assert "train/contrastive/cs" not in logs["CE + MS"] and "train/contrastive/ms" in logs["CE + MS"]
    assert "train/contrastive/cs" in logs["CE + MS + CS"]
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a PNG
    table = capsys.readouterr().out
    assert all(f"| {variant} |" in table for variant in ablation.VARIANTS)


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
