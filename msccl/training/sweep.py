"""W&B sweep files read for a local Optuna study: what `msccl sweep` runs without a W&B server.

Online, a `conf/sweeps/*.yaml` file is an ordinary W&B sweep (`wandb sweep FILE`, then `wandb agent
ID`). Read here, the same file's `method` picks an Optuna sampler (grid: GridSampler, random:
RandomSampler, bayes: TPESampler), each parameter's W&B distribution becomes the matching Optuna
distribution, and its `command` is expanded per trial with `${args}` exactly as the W&B agent expands it
(`--name=value`). `open_study` keeps a sweep's study in `<sweep dir>/optuna.db`, so a sweep can be
continued.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

__all__ = ["STUDY_FILE", "Sweep", "SweepError", "open_study", "proposals"]

Suggest = Callable[[optuna.Trial], Any]

_SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "random": lambda space, seed: optuna.samplers.RandomSampler(seed=seed),
    "bayes": lambda space, seed: optuna.samplers.TPESampler(seed=seed),
    "grid": lambda space, seed: optuna.samplers.GridSampler(space, seed=seed),
}
_UNSUPPORTED = ("normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta")

STUDY_FILE = "optuna.db"
"""The study's SQLite file in a sweep's folder."""


class SweepError(ValueError):
    """A sweep file that the local runner cannot run; the message names the file and the setting."""


def _choice(value: Any) -> Any:
    """A categorical choice as Optuna can store it: lists and mappings as the text W&B would pass."""
    return value if value is None or isinstance(value, bool | int | float | str) else f"{value}"


def _rounded(suggest: Suggest, q: float) -> Suggest:
    """Multiples of `q` (integers when `q` is one, so integer arguments parse)."""
    kind = int if isinstance(q, int) else float
    return lambda trial: kind(round(suggest(trial) / q) * q)


@dataclass
class Parameter:
    """One sweep parameter: a constant or a way to draw a value from an Optuna trial."""

    name: str
    constant: Any = None
    suggest: Suggest | None = None
    grid: list[Any] | None = None

    @classmethod
    def from_spec(cls, name: str, spec: Any, file: Path) -> Parameter:
        where = f"{file}: parameter {name!r}"
        if not isinstance(spec, dict):
            raise SweepError(f"{where} must be a mapping (value / values / distribution with min, max)")
        if "parameters" in spec:
            raise SweepError(f"{where}: nested parameters are not supported; use dotted names instead")
        if "value" in spec:
            return cls(name, constant=spec["value"])
        distribution = spec.get("distribution")
        if "values" in spec:
            if "probabilities" in spec:
                raise SweepError(f"{where}: 'probabilities' are not supported by the local runner")
            choices = [_choice(v) for v in spec["values"]]
            return cls(name, suggest=lambda trial: trial.suggest_categorical(name, choices), grid=choices)
        if distribution in _UNSUPPORTED:
            raise SweepError(f"{where}: distribution {distribution!r} is not supported by the local runner")
        if "min" not in spec or "max" not in spec:
            raise SweepError(f"{where} needs value, values, or min and max")
        low, high = spec["min"], spec["max"]
        if distribution is None:  # W&B infers the distribution from the bounds' types
            distribution = "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform"
        q = spec.get("q", 1)
        if distribution in ("log_uniform", "q_log_uniform"):  # bounds are natural-log exponents
            low, high = math.exp(low), math.exp(high)
        if distribution == "int_uniform":
            grid = list(range(int(low), int(high) + 1))
            return cls(name, suggest=lambda trial: trial.suggest_int(name, int(low), int(high)), grid=grid)
        if distribution == "uniform":
            return cls(name, suggest=lambda trial: trial.suggest_float(name, low, high))
        if distribution == "q_uniform":
            return cls(name, suggest=lambda trial: trial.suggest_float(name, low, high, step=q))
        if distribution in ("log_uniform", "log_uniform_values", "inv_log_uniform_values"):
            # 1/x of a log-uniform x is log-uniform again: the same draws over [min, max]
            return cls(name, suggest=lambda trial: trial.suggest_float(name, low, high, log=True))
        if distribution in ("q_log_uniform", "q_log_uniform_values"):
            return cls(
                name, suggest=_rounded(lambda trial: trial.suggest_float(name, low, high, log=True), q)
            )
        raise SweepError(f"{where}: unknown distribution {distribution!r}")


@dataclass
class Sweep:
    """A parsed W&B sweep file."""

    file: Path
    name: str
    method: str
    metric: str
    goal: str
    command: list[str]
    parameters: list[Parameter]
    run_cap: int | None = None

    @classmethod
    def load(cls, file: str | Path) -> Sweep:
        file = Path(file)
        try:
            spec = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise SweepError(f"cannot read sweep file {file}: {error}") from None
        if not isinstance(spec, dict):
            raise SweepError(f"{file} is not a W&B sweep definition (a mapping)")
        method = spec.get("method")
        if method not in _SAMPLERS:
            raise SweepError(f"{file}: method must be one of {', '.join(_SAMPLERS)}, got {method!r}")
        metric = spec.get("metric") or {}
        if not metric.get("name"):
            raise SweepError(f"{file}: metric.name is needed (e.g. val/mIoU) to rank the trials")
        goal = metric.get("goal", "minimize")
        if goal not in ("minimize", "maximize"):
            raise SweepError(f"{file}: metric.goal must be minimize or maximize, got {goal!r}")
        command = spec.get("command")
        if not command or "${args}" not in command:
            raise SweepError(
                f"{file}: command must be a list that contains ${{args}} (e.g. [msccl, fit, ...])"
            )
        parameters = [Parameter.from_spec(n, s, file) for n, s in (spec.get("parameters") or {}).items()]
        if method == "grid" and any(p.suggest is not None and p.grid is None for p in parameters):
            raise SweepError(f"{file}: a grid sweep needs values (or int_uniform ranges) for every parameter")
        return cls(
            file,
            spec.get("name") or file.stem,
            method,
            metric["name"],
            goal,
            command,
            parameters,
            spec.get("run_cap"),
        )

    @property
    def grid_space(self) -> dict[str, list[Any]]:
        return {p.name: p.grid for p in self.parameters if p.suggest is not None and p.grid is not None}

    @property
    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid_space.values())

    def sampler(self, seed: int | None = None) -> optuna.samplers.BaseSampler:
        return _SAMPLERS[self.method](self.grid_space, seed)

    def draw(self, trial: optuna.Trial) -> dict[str, Any]:
        """The parameter values of one trial, constants included."""
        return {p.name: p.constant if p.suggest is None else p.suggest(trial) for p in self.parameters}

    @staticmethod
    def arguments(values: dict[str, Any]) -> list[str]:
        """`${args}` as the W&B agent writes it: `--name=value`, value formatted by Python."""
        return [f"--{name}={value}" for name, value in values.items()]

    def command_line(self, values: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
        """The trial's command, `${args}` expanded as the W&B agent does, `extra` arguments before it
        (so the sweep's values win); `msccl` runs with this interpreter, the sweep's configs found from any
        directory."""
        arguments = self.arguments(values)
        expanded: list[str] = []
        for word in self._with_configs_located(self.command):
            if word == "${args}":
                expanded += [*extra, *arguments]
            elif word == "${args_no_hyphens}":
                expanded += [*extra, *(a[2:] for a in arguments)]
            elif word == "${args_json}":
                expanded += [*extra, json.dumps(values)]
            elif word in ("${env}", "${interpreter}", "${program}") or word.startswith("${"):
                raise SweepError(f"{self.file}: command macro {word} is not supported; call `msccl` directly")
            else:
                expanded.append(word)
        if expanded and expanded[0] == "msccl":
            expanded[:1] = [sys.executable, "-m", "msccl"]
        return expanded

    def _with_configs_located(self, words: list[str]) -> list[str]:
        """The sweep's own `--config` files, found from any directory: a relative path that does not exist
        from here is taken from the first folder above the sweep file that holds it (the repository's
        root for `conf/sweeps/*.yaml`), so `msccl sweep` runs from anywhere."""
        located = list(words)
        for i, word in enumerate(words):
            if word == "--config" and i + 1 < len(words):
                located[i + 1] = self._locate(words[i + 1])
            elif word.startswith("--config="):
                located[i] = "--config=" + self._locate(word.removeprefix("--config="))
        return located

    def _locate(self, path: str) -> str:
        if Path(path).is_absolute() or Path(path).exists():
            return path
        for folder in self.file.resolve().parents:
            if (folder / path).exists():
                return str(folder / path)
        return path


def proposals(sweep: Sweep, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """The parameter values of the first `count` trials the sampler proposes (nothing runs)."""
    study = optuna.create_study(sampler=sweep.sampler(seed), direction=sweep.goal)
    values: list[dict[str, Any]] = []
    # inside optimize, as a grid sampler stops the study when the grid is done
    study.optimize(lambda trial: values.append(sweep.draw(trial)) or 0.0, n_trials=count)
    return values


def open_study(sweep: Sweep, sweep_dir: Path, seed: int = 0) -> optuna.Study:
    """The sweep's study, kept in `sweep_dir / STUDY_FILE`: created on the first run, continued (its
    earlier trials count) on the next."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=sweep.name,
        storage=f"sqlite:///{sweep_dir / STUDY_FILE}",
        sampler=sweep.sampler(seed),
        direction=sweep.goal,
        load_if_exists=True,
    )
