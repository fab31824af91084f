"""The benchmark scripts still run end to end (at tiny sizes; their real sizes stay out of the suite)."""

from __future__ import annotations

import importlib.util
import json
import math
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
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert all(f"| {variant} |" in table for variant in ablation.VARIANTS)


@pytest.mark.slow
def test_train_step_prints_a_row_with_ratios():
    command = [sys.executable, "benchmarks/train_step.py", "--architectures", "FPN", "--size", "64"]
    command += ["--batch", "2", "--repeats", "1", "--max-pairs", "2", "--threads", "1"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| FPN |"))
    cells = [cell.strip("* ") for cell in row.strip("|").split("|")]
    time_ratio, iqr = (float(v.strip("[]")) for v in cells[3].split())  # "median [IQR]"
    memory_ratio = float(cells[8])
    assert time_ratio > 0 and iqr >= 0 and memory_ratio > 0
