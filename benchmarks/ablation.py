"""Ablation on the synthetic dataset: CE only against CE + contrastive losses, paired over seeds.

Each arm (`ARMS`) trains with the same budget (the demo's `conf/synthetic.yaml`, shrunk by
`DEFAULT_BUDGET`) for several seeds. A seed fixes the network's initialisation and the training order and
augmentation (a function of the run's seed and epoch, msccl.data.sampling), the same in every arm, so
arms are compared seed by seed: for each pair in `PAIRS` whose arms both ran, the mean paired difference,
its 95% Student-t interval, the paired t-test and the exact Wilcoxon signed-rank test
(`benchmarks/paired_stats.py`). Every run is a normal `msccl fit` in its own run directory
`<output>/<arm>/seed_<k>`, one after the other in a fresh process. At the end it prints the arms' table
(last validation mIoU: mean, standard deviation, min-max, per seed; wall time per run) and the pairs'
table, and writes `<output>/learning_curves.png` (validation mIoU vs step, mean and min-max band per arm),
`<output>/paired.png` (each seed's final mIoU per arm, a seed's arms joined by a line), `<output>/results.md`
(the tables) and `<output>/results.json` (every value).

    .venv/bin/python benchmarks/ablation.py                       # 3 seeds: ~30 min on 2 CPU cores
    .venv/bin/python benchmarks/ablation.py --seeds 0 1 2 3 4 --output runs/ablation_5seeds
    .venv/bin/python benchmarks/ablation.py --layout context      # the context-dependent synthetic set
    .venv/bin/python benchmarks/ablation.py --reuse               # keep finished runs, run the rest
    .venv/bin/python benchmarks/ablation.py --budget --trainer.max_epochs=2   # any fit overrides

An arm is a list of `msccl fit` overrides of conf/synthetic.yaml (`--config=<file>` adds a config file).
Before anything trains, every `class_path` an arm names must be importable and every file it adds must
exist; otherwise one line says which. Checkpoints are deleted after each run (`--keep-checkpoints` keeps
them): the tables need only `metrics.csv`.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's msccl, also when another one is installed

from benchmarks.paired_stats import PairedComparison, compare_paired  # noqa: E402
from msccl.plots.curves import Panel, plot_learning_curves, plot_paired_seeds  # noqa: E402

CONFIG = ROOT / "conf" / "synthetic.yaml"

PIXEL_CONTRAST_WARMUP = ["--trainer.callbacks.start_step=32"]
"""The original's warm-up, 5000 of its 40000 iterations, scaled to DEFAULT_BUDGET's 256 steps."""

ARMS: dict[str, list[str]] = {
    "CE": ["--model.init_args.contrastive=null"],
    "CE + PC": ["--config=conf/comparison/pixel_contrast.yaml", *PIXEL_CONTRAST_WARMUP],
    "CE + PC + memory": ["--config=conf/comparison/pixel_contrast_memory.yaml", *PIXEL_CONTRAST_WARMUP],
    "CE + MS": ["--model.init_args.contrastive.init_args.cross_scale=false"],
    "CE + MS + CS": [],
}
"""Arm name -> its `msccl fit` overrides of conf/synthetic.yaml: the docs/method.md A4 terms on or off, or
pixel contrast (docs/method.md P) in their place, with or without its memory banks."""

PAIRS: list[tuple[str, str]] = [
    ("CE", "CE + PC"),
    ("CE + PC", "CE + PC + memory"),
    ("CE", "CE + MS"),
    ("CE + MS", "CE + MS + CS"),
    ("CE + PC + memory", "CE + MS + CS"),
]
"""(baseline, arm) comparisons that matter: does each term add to what it is added to, and does the
paper's loss beat the pixel-contrast baseline with memory. A pair is reported when both arms ran."""

LAYOUTS: dict[str, list[str]] = {
    "objects": [],
    "context": ["--data.init_args.layout=context", "--data.init_args.num_classes=3"],
}
"""Synthetic layout -> its overrides (msccl.data.synthetic: "context" needs context beyond a pixel's
neighbourhood to tell two classes apart)."""

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
    arm: str
    seed: int
    run_dir: str
    wall_seconds: float
    steps: list[int]
    miou: list[float]  # validation mIoU (%) after each validation, in step order

    @property
    def final(self) -> float:
        return self.miou[-1]


def slug(arm: str) -> str:
    return arm.lower().replace(" + ", "_").replace(" ", "_")


def missing_requirements(arm: str) -> list[str]:
    """What an arm needs that this checkout lacks: classes it names that cannot be imported, config
    files it adds that do not exist."""
    missing = []
    for override in ARMS[arm]:
        key, _, value = override.partition("=")
        if key.endswith("class_path") and value:
            module, _, name = value.rpartition(".")
            try:
                getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                missing.append(f"class {value}")
        elif key == "--config" and not (ROOT / value).is_file() and not Path(value).is_file():
            missing.append(f"config file {value}")
    return missing


def validation_curve(metrics_csv: Path) -> tuple[list[int], list[float]]:
    """(step, val mIoU in %) of every validation logged in a run's metrics.csv."""
    with open(metrics_csv, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/mIoU")]
    if not rows:
        raise RuntimeError(f"{metrics_csv} has no val/mIoU rows")
    return [int(row["step"]) for row in rows], [100 * float(row["val/mIoU"]) for row in rows]


@contextmanager
def _sigterm_ends_the_run() -> Iterator[None]:
    """While a run trains, SIGTERM to this script raises SystemExit, on which `subprocess.run` kills the
    `msccl fit` it waits for: a killed ablation leaves no training running without its parent."""

    def exit_(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(arm: str, seed: int, run_dir: Path, budget: list[str], keep_checkpoints: bool) -> Run:
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
        *ARMS[arm],
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
        with _sigterm_ends_the_run():
            code = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            ).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{arm}, seed {seed}: msccl fit exited with {code}; see {log}")
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    steps, miou = validation_curve(run_dir / "metrics.csv")
    run = Run(arm, seed, str(run_dir), wall, steps, miou)
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
        "| arm | val mIoU (%): mean ± std | min - max | per seed | wall time per run (s) |",
        "|---|---:|---:|---|---:|",
    ]
    for arm in ARMS:
        mine = sorted((r for r in runs if r.arm == arm), key=lambda r: r.seed)
        if not mine:
            continue
        mean, std, low, high = spread([r.final for r in mine])
        seeds = ", ".join(f"{r.final:.2f}" for r in mine)
        wall = statistics.fmean(r.wall_seconds for r in mine)
        lines.append(f"| {arm} | {mean:.2f} ± {std:.2f} | {low:.2f} - {high:.2f} | {seeds} | {wall:.0f} |")
    return "\n".join(lines)


def comparisons(runs: list[Run]) -> dict[tuple[str, str], PairedComparison]:
    """The paired comparison of every pair in `PAIRS` whose arms share at least 2 seeds."""
    finals: dict[str, dict[int, float]] = {}
    for run in runs:
        finals.setdefault(run.arm, {})[run.seed] = run.final
    result = {}
    for baseline, arm in PAIRS:
        if len(set(finals.get(baseline, {})) & set(finals.get(arm, {}))) >= 2:
            result[baseline, arm] = compare_paired(finals[baseline], finals[arm])
    return result


def pairs_table(compared: dict[tuple[str, str], PairedComparison]) -> str:
    lines = [
        "| arm vs baseline | seeds | mean difference (mIoU points) | 95% interval | paired t p | "
        "Wilcoxon exact p | seeds better |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for (baseline, arm), c in compared.items():
        lines.append(
            f"| {arm} vs {baseline} | {c.n} | {c.mean:+.2f} | [{c.low:+.2f}, {c.high:+.2f}] | {c.t_p:.3f} | "
            f"{c.wilcoxon_p:.3f} | {c.wins}/{c.n} |"
        )
    return "\n".join(lines)


CONFUSION_ROWS = 12
"""At most this many (true, predicted) pairs in the confusion table: the largest in any arm."""


def row_normalised_confusion(run_dir: str) -> tuple[list[str], list[list[float]]] | None:
    """(class names, % of each true class's pixels predicted as each class) of a run's last validation
    (`val_confusion.csv`, written by the evaluation figures); None if the run has none."""
    path = Path(run_dir) / "val_confusion.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    counts = [[float(v) for v in row[1:]] for row in rows]
    return header[1:], [[100 * v / max(sum(row), 1.0) for v in row] for row in counts]


def confusion_table(runs: list[Run]) -> str:
    """Where each arm's errors go: for the largest off-diagonal (true, predicted) pairs, the % of the true
    class's pixels predicted as the other class, mean over the arm's seeds. It tells errors between
    classes (e.g. the context layout's two frame classes) from errors against the background."""
    means: dict[str, list[list[float]]] = {}
    names: list[str] = []
    for arm in ARMS:
        matrices = [row_normalised_confusion(r.run_dir) for r in runs if r.arm == arm]
        if not matrices or None in matrices:
            continue
        names = matrices[0][0]
        means[arm] = [
            [statistics.fmean(m[1][t][p] for m in matrices) for p in range(len(names))]
            for t in range(len(names))
        ]
    if not means:
        return ""
    pairs = [(t, p) for t in range(len(names)) for p in range(len(names)) if t != p]
    pairs = sorted(pairs, key=lambda tp: -max(m[tp[0]][tp[1]] for m in means.values()))[:CONFUSION_ROWS]
    lines = [
        "| true -> predicted (% of the true class's pixels) | " + " | ".join(means) + " |",
        "|---|" + "---:|" * len(means),
    ]
    for t, p in pairs:
        lines.append(
            f"| {names[t]} -> {names[p]} | " + " | ".join(f"{m[t][p]:.2f}" for m in means.values()) + " |"
        )
    return "\n".join(lines)


def plot(runs: list[Run], output: Path, title: str) -> None:
    """Validation mIoU vs step: the mean over seeds per arm, the min-max band shaded (`msccl plot`'s
    drawing, with the seeds of an arm as one group); and each seed's final mIoU per arm."""
    groups = {}
    for arm in ARMS:
        mine = [r.run_dir for r in runs if r.arm == arm]
        if mine:
            groups[f"{arm} ({len(mine)} seeds)"] = mine
    panel = Panel("validation mIoU", ("val/mIoU",), 100.0, "validation mIoU (%)")
    plot_learning_curves(groups, output / "learning_curves.png", panels=[panel], title=title)
    finals = {arm: {r.seed: r.final for r in runs if r.arm == arm} for arm in ARMS}
    plot_paired_seeds(
        {arm: seeds for arm, seeds in finals.items() if seeds},
        output / "paired.png",
        "final validation mIoU (%)",
        title,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--layout", choices=list(LAYOUTS), default="objects", help="the synthetic layout")
    parser.add_argument("--reuse", action="store_true", help="keep runs that finished before")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument(
        "--budget",
        nargs=argparse.REMAINDER,
        default=DEFAULT_BUDGET,
        help=f"msccl fit overrides replacing the default budget {' '.join(DEFAULT_BUDGET)} (give it last)",
    )
    args = parser.parse_args(argv)
    for arm in args.arms:
        if missing := missing_requirements(arm):
            print(
                f"ablation.py: error: arm {arm!r} needs {', '.join(missing)}, which this checkout lacks",
                file=sys.stderr,
            )
            return 1
    budget = [*LAYOUTS[args.layout], *args.budget]
    args.output.mkdir(parents=True, exist_ok=True)
    print(f"budget: {' '.join(budget)}; seeds {args.seeds}; output {args.output}", flush=True)

    runs: list[Run] = []
    for seed in args.seeds:  # seed-major: an interrupted run still has every arm for the first seeds
        for arm in args.arms:
            run_dir = args.output / slug(arm) / f"seed_{seed}"
            run = finished(run_dir) if args.reuse else None
            if run is None:
                run = train(arm, seed, run_dir, budget, args.keep_checkpoints)
            runs.append(run)
            print(
                f"{arm:>16}, seed {seed}: val mIoU {run.final:.2f}% in {run.wall_seconds:.0f} s", flush=True
            )
    total = sum(r.wall_seconds for r in runs)  # of the runs themselves, also when reused

    compared = comparisons(runs)
    result = table(runs) + ("\n\n" + pairs_table(compared) if compared else "")
    if confusions := confusion_table(runs):
        result += "\n\nWhere the errors go, at the last validation:\n\n" + confusions
    summary = (
        f"Synthetic dataset ({args.layout}), `{' '.join(budget)}`, seeds {args.seeds}: mIoU of the last "
        f"validation; pairs: arm minus baseline on the same seeds. All runs took {total / 60:.1f} min."
    )
    print(f"\n{summary}\n\n{result}")
    plot(runs, args.output, f"synthetic ({args.layout}) ablation, {len(args.seeds)} seeds")
    (args.output / "results.md").write_text(f"{summary}\n\n{result}\n")
    record = {
        "layout": args.layout,
        "budget": budget,
        "total_wall_seconds": total,
        "runs": [asdict(r) for r in runs],
        "pairs": [{"baseline": b, "arm": a, **asdict(c)} for (b, a), c in compared.items()],
    }
    (args.output / "results.json").write_text(json.dumps(record, indent=1))
    print(f"\nplots: {args.output / 'learning_curves.png'}, {args.output / 'paired.png'}")
    return 0 if all(math.isfinite(r.final) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
