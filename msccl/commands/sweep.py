"""`msccl sweep SWEEP.yaml --count N [fit arguments ...]`: a W&B sweep file run locally with Optuna.

Online, a `conf/sweeps/*.yaml` file is an ordinary W&B sweep (`wandb sweep FILE`, then `wandb agent
ID`). Without a W&B server (offline machines, many clusters) `msccl sweep` runs the same file
(`msccl.training.sweep`: sampler, distributions, `${args}` as the W&B agent expands it). Each trial is a
normal `msccl fit` in its own run directory `<sweep dir>/trial_NNN` (logged offline to W&B when the
config has a WandbLogger, with the sweep's name as W&B group); the objective is the sweep metric's last
logged value, read from the trial's `summary.json` (the last value is what W&B's sweep metric uses too).
The study is kept in `<sweep dir>/optuna.db`: running the command again adds trials to the same sweep.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from msccl.commands.flags import CommandParser
from msccl.configs import ConfigNotFoundError, config_path
from msccl.progress import progress
from msccl.training.sweep import Sweep, SweepError, open_study, proposals

__all__ = ["best_trials_table", "main"]


def main(argv: list[str]) -> int:
    """`msccl sweep SWEEP.yaml ...`: 0 when at least one trial of the study completed, else 1."""
    parser = CommandParser(
        prog="msccl sweep",
        description="Run a W&B sweep file locally with Optuna; other arguments go to every trial's command "
        "(before the sweep's own, e.g. --config conf/experiments/X.yaml --trainer.max_steps=2000).",
    )
    parser.add_argument("sweep_file", help="a W&B sweep definition (conf/sweeps/*.yaml)")
    parser.add_argument("--count", type=int, help="trials to run (default: run_cap, or the whole grid)")
    parser.add_argument("--sweep_dir", help="where trials and the study go (default: runs/sweeps/<name>)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--dry_run", action="store_true", help="print the trials' commands, run nothing")
    arguments, extra = parser.parse_known_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        sweep = Sweep.load(config_path(arguments.sweep_file))  # a file, or a packaged name: sweeps/NAME
    except (SweepError, ConfigNotFoundError) as error:
        parser.error(str(error))
    count = arguments.count or sweep.run_cap or (sweep.grid_size if sweep.method == "grid" else None)
    if not count:
        parser.error(f"{sweep.file}: give --count (the sweep has no run_cap)")
    if arguments.dry_run:
        for values in proposals(sweep, count, arguments.seed):
            print(shlex.join(sweep.command_line(values, extra)))
        return 0
    sweep_dir = Path(arguments.sweep_dir or Path("runs") / "sweeps" / sweep.name)
    study = open_study(sweep, sweep_dir, arguments.seed)

    trials = progress(total=count, desc=f"sweep {sweep.name}", unit="trial")

    def objective(trial: optuna.Trial) -> float:
        values = sweep.draw(trial)
        started = time.monotonic()
        shown = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items())
        try:
            value = _run_trial(sweep, values, extra, sweep_dir / f"trial_{trial.number:03d}")
        except _TrialFailed as error:
            trials.write(f"trial {trial.number}: failed ({error}) [{shown}]")
            raise
        finally:
            trials.update(1)
        trials.write(
            f"trial {trial.number}: {sweep.metric}={value:.4f} [{shown}] {time.monotonic() - started:.0f} s"
        )
        return value

    with trials:
        study.optimize(objective, n_trials=count, catch=(_TrialFailed,))
    print("\n" + best_trials_table(study, sweep, sweep_dir))
    return 0 if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) else 1


def _run_trial(sweep: Sweep, values: dict[str, Any], extra: Sequence[str], run_dir: Path) -> float:
    """Run one trial's command in `run_dir` (its output in `output.log`); the sweep metric's last value."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [*sweep.command_line(values, extra), f"--run_dir={run_dir}"]
    env = dict(os.environ)  # the trials run this interpreter's msccl (`python -m msccl`), as the sweep does
    env.setdefault("WANDB_RUN_GROUP", sweep.name)
    log = run_dir / "output.log"
    with open(log, "w") as output:
        output.write(" ".join(command) + "\n\n")
        output.flush()
        code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env).returncode
    summary = run_dir / "summary.json"
    if code != 0 or not summary.is_file():
        raise _TrialFailed(f"exit code {code}; see {log}")
    metrics = json.loads(summary.read_text())
    if sweep.metric not in metrics:
        raise _TrialFailed(f"metric {sweep.metric!r} was not logged (logged: {', '.join(metrics)})")
    return metrics[sweep.metric]


class _TrialFailed(RuntimeError):
    """A trial that failed or logged no sweep metric: Optuna records it as failed, the sweep goes on."""


def best_trials_table(study: optuna.Study, sweep: Sweep, sweep_dir: Path, top: int = 10) -> str:
    """The `top` complete trials, best first, with their parameters and run directories."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: t.value, reverse=sweep.goal == "maximize")
    names = [p.name for p in sweep.parameters if p.suggest is not None]
    rows = [["trial", sweep.metric, *names, "run directory"]]
    for t in done[:top]:
        params = [f"{t.params.get(n, '')}" for n in names]
        rows.append([str(t.number), f"{t.value:.4f}", *params, str(sweep_dir / f"trial_{t.number:03d}")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    failed = sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)
    title = f"best trials of sweep {sweep.name} ({len(done)} complete, {failed} failed; goal: {sweep.goal})"
    return "\n".join([title, *lines])
