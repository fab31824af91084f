"""Ablation on the synthetic dataset: CE only, CE + multi-scale, CE + multi-scale + cross-scale.

Each variant trains with the same budget (the demo's `conf/synthetic.yaml`, shrunk by `DEFAULT_BUDGET`)
for several seeds (`seed_everything`: initialisation, training order and augmentation; the images are
the same). Every run is a normal `msccl fit` in its own run directory `<output>/<variant>/seed_<k>`,
one after the other in a fresh process. At the end it prints a table of the last validation mIoU
(mean, standard deviation, min-max over seeds) and the wall time per run, and writes
`<output>/learning_curves.png` (validation mIoU vs step, mean and min-max band per variant),
`<output>/results.md` (the table) and `<output>/results.json` (every value).

    .venv/bin/python benchmarks/ablation.py                       # 3 seeds: ~30 min on 2 CPU cores
    .venv/bin/python benchmarks/ablation.py --seeds 0 1 2 3 4 --output runs/ablation_5seeds
    .venv/bin/python benchmarks/ablation.py --reuse               # keep finished runs, run the rest
    .venv/bin/python benchmarks/ablation.py --budget --trainer.max_epochs=2   # any fit overrides

The variants differ only in `model.init_args.contrastive`: null (CE only); the paper's loss with
`cross_scale: false` (multi-scale terms only); the paper's loss as configured (both). Checkpoints are
deleted after each run (`--keep-checkpoints` keeps them): the table needs only `metrics.csv`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's msccl, also when another one is installed

from msccl.plots.curves import Panel, plot_learning_curves  # noqa: E402

CONFIG = ROOT / "conf" / "synthetic.yaml"

VARIANTS: dict[str, list[str]] = {
    "CE": ["--model.init_args.contrastive=null"],
    "CE + MS": ["--model.init_args.contrastive.init_args.cross_scale=false"],
    "CE + MS + CS": [],
}
"""Variant name -> its `msccl fit` overrides of conf/synthetic.yaml (docs/method.md A4 terms on or off)."""

DEFAULT_BUDGET = [
    "--trainer.max_epochs=8",
    "--data.init_args.num_train=256",
    "--data.init_args.num_val=64",
]
"""The shared budget: 8 epochs of 256 images of 128x128 (256 steps of batch 8), validation on 64 images
after every epoch; see docs/results.md for its measured time."""

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@dataclass
class Run:
    variant: str
    seed: int
    run_dir: str
    wall_seconds: float
    steps: list[int]
    miou: list[float]  # validation mIoU (%) after each validation, in step order

    @property
    def final(self) -> float:
        return self.miou[-1]


def slug(variant: str) -> str:
    return variant.lower().replace(" + ", "_").replace(" ", "_")


def validation_curve(metrics_csv: Path) -> tuple[list[int], list[float]]:
    """(step, val mIoU in %) of every validation logged in a run's metrics.csv."""
    with open(metrics_csv, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/mIoU")]
    if not rows:
        raise RuntimeError(f"{metrics_csv} has no val/mIoU rows")
    return [int(row["step"]) for row in rows], [100 * float(row["val/mIoU"]) for row in rows]


def train(variant: str, seed: int, run_dir: Path, budget: list[str], keep_checkpoints: bool) -> Run:
    """One `msccl fit` in a fresh process; its output goes to `<run_dir>/output.log`."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "msccl",
        "fit",
        f"--config={CONFIG}",
        *budget,
        *QUIET,
        *VARIANTS[variant],
        f"--seed_everything={seed}",
        f"--run_dir={run_dir}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log = run_dir / "output.log"
    start = time.perf_counter()
    with open(log, "w") as output:
        output.write(" ".join(command) + "\n\n")
        output.flush()
        code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{variant}, seed {seed}: msccl fit exited with {code}; see {log}")
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    steps, miou = validation_curve(run_dir / "metrics.csv")
    run = Run(variant, seed, str(run_dir), wall, steps, miou)
    (run_dir / "ablation_run.json").write_text(json.dumps(asdict(run), indent=1))
    return run


def finished(run_dir: Path) -> Run | None:
    record = run_dir / "ablation_run.json"
    return Run(**json.loads(record.read_text())) if record.is_file() else None


def spread(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, sample standard deviation, min, max); the deviation is 0 for a single value."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, min(values), max(values)


def table(runs: list[Run]) -> str:
    lines = [
        "| variant | val mIoU (%): mean ± std | min - max | per seed | wall time per run (s) |",
        "|---|---:|---:|---|---:|",
    ]
    for variant in VARIANTS:
        mine = sorted((r for r in runs if r.variant == variant), key=lambda r: r.seed)
        if not mine:
            continue
        mean, std, low, high = spread([r.final for r in mine])
        seeds = ", ".join(f"{r.final:.2f}" for r in mine)
        wall = statistics.fmean(r.wall_seconds for r in mine)
        lines.append(
            f"| {variant} | {mean:.2f} ± {std:.2f} | {low:.2f} - {high:.2f} | {seeds} | {wall:.0f} |"
        )
    return "\n".join(lines)


def plot(runs: list[Run], path: Path, title: str) -> None:
    """Validation mIoU vs step: the mean over seeds per variant, the min-max band shaded (`msccl plot`'s
    drawing, with the seeds of a variant as one group)."""
    groups = {}
    for variant in VARIANTS:
        mine = [r.run_dir for r in runs if r.variant == variant]
        if mine:
            groups[f"{variant} ({len(mine)} seeds)"] = mine
    panel = Panel("validation mIoU", ("val/mIoU",), 100.0, "validation mIoU (%)")
    plot_learning_curves(groups, path, panels=[panel], title=title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--reuse", action="store_true", help="keep runs that finished before")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument(
        "--budget",
        nargs=argparse.REMAINDER,
        default=DEFAULT_BUDGET,
        help=f"msccl fit overrides replacing the default budget {' '.join(DEFAULT_BUDGET)} (give it last)",
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    print(f"budget: {' '.join(args.budget)}; seeds {args.seeds}; output {args.output}", flush=True)

    runs: list[Run] = []
    for seed in args.seeds:  # seed-major: an interrupted run still has every variant for the first seeds
        for variant in args.variants:
            run_dir = args.output / slug(variant) / f"seed_{seed}"
            run = finished(run_dir) if args.reuse else None
            if run is None:
                run = train(variant, seed, run_dir, args.budget, args.keep_checkpoints)
            runs.append(run)
            print(
                f"{variant:>13}, seed {seed}: val mIoU {run.final:.2f}% in {run.wall_seconds:.0f} s",
                flush=True,
            )
    total = sum(r.wall_seconds for r in runs)  # of the runs themselves, also when reused

    result = table(runs)
    summary = (
        f"Synthetic dataset, `{' '.join(args.budget)}`, seeds {args.seeds}: mIoU of the last validation. "
        f"Wall time of all runs {total / 60:.1f} min."
    )
    print(f"\n{summary}\n\n{result}")
    plot(runs, args.output / "learning_curves.png", f"synthetic ablation, {len(args.seeds)} seeds")
    (args.output / "results.md").write_text(f"{summary}\n\n{result}\n")
    record = {"budget": args.budget, "total_wall_seconds": total, "runs": [asdict(r) for r in runs]}
    (args.output / "results.json").write_text(json.dumps(record, indent=1))
    print(f"\nplot: {args.output / 'learning_curves.png'}")
    return 0 if all(math.isfinite(r.final) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
