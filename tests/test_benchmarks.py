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
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a PNG
    table = capsys.readouterr().out
    assert all(f"| {variant} |" in table for variant in ablation.VARIANTS)


@pytest.mark.slow
def test_train_step_prints_a_row_with_ratios():
    command = [sys.executable, "benchmarks/train_step.py", "--architectures", "FPN", "--size", "64"]
    command += ["--batch", "2", "--repeats", "1", "--threads", "1"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| FPN |"))
    cells = [cell.strip("* ") for cell in row.strip("|").split("|")]
    ce_s, contrastive_s, time_ratio = (float(c) for c in cells[1:4])
    ce_mib, contrastive_mib, memory_ratio = (float(c) for c in cells[5:8])
    # the ratio columns are the measured ones (with / without the contrastive loss), up to rounding
    assert ce_s > 0 and time_ratio == pytest.approx(contrastive_s / ce_s, rel=0.02, abs=0.01)
    assert ce_mib > 0 and memory_ratio == pytest.approx(contrastive_mib / ce_mib, rel=0.02, abs=0.01)
