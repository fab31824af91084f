from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from jsonargparse import Namespace

from msccl.cli import build_cli
from msccl.commands.sweep import main
from msccl.training.sweep import Sweep, SweepError, proposals
from tests.conftest import REPO, TINY_SYNTHETIC

SWEEP_FILES = sorted((REPO / "conf" / "sweeps").glob("*.yaml"))
TINY_MODEL = [a for a in TINY_SYNTHETIC if a.startswith("--model.")]


def _fit_arguments(sweep: Sweep, values: dict[str, Any]) -> list[str]:
    command = sweep.command_line(values)
    assert command[:4] == [sys.executable, "-m", "msccl", "fit"]
    return command[4:]


def _expected(text: str) -> Any:
    """How a command-line value reads back from the parsed config."""
    return yaml.safe_load(text)


def _parsed(value: Any) -> Any:
    """A class given by `class_path` compares by its path (a Namespace when parsed, a dict in hparams)."""
    if isinstance(value, Namespace | dict) and "class_path" in value:
        return value["class_path"]
    return value


def test_every_sweep_file_is_a_valid_wandb_sweep_definition():
    assert {p.stem for p in SWEEP_FILES} >= {"learning_rate", "contrastive_bayes", "contrastive_ablation"}
    for file in SWEEP_FILES:
        spec = yaml.safe_load(file.read_text())
        assert spec["method"] in ("grid", "random", "bayes") and spec["metric"]["name"] == "val/mIoU"
        assert spec["command"][0] == "msccl" and "${args}" in spec["command"]
        assert "${interpreter}" not in spec["command"]  # W&B's is the literal `python`
        assert spec["program"] == "msccl"  # the W&B agent reads `program` even when unused


@pytest.mark.parametrize("file", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_argument_lines_parse_and_reach_the_init_args(file, monkeypatch):
    monkeypatch.chdir(REPO)  # sweep commands name configs relative to the repository, as the agent runs
    sweep = Sweep.load(file)
    parser = build_cli(TINY_SYNTHETIC, run=False).parser
    lines = [_fit_arguments(sweep, values) for values in proposals(sweep, count=4)]
    for values, line in zip(proposals(sweep, count=4), lines, strict=True):
        config = parser.parse_args(line)
        for argument in sweep.arguments(values):
            key, text = argument[2:].split("=", 1)
            assert _parsed(config[key]) == _expected(text), argument
    # one line built into objects: the values arrive in the module's hyperparameters
    cli = build_cli([*lines[0], *TINY_MODEL], run=False)
    for argument in sweep.arguments(proposals(sweep, count=1)[0]):
        key, text = argument[2:].split("=", 1)
        if key.startswith("model.init_args."):
            value: Any = cli.model.hparams
            for part in key.removeprefix("model.init_args.").split("."):
                value = value[part]
        else:
            value = cli.config[key]
        assert _parsed(value) == _expected(text), argument


def test_wandb_distributions_map_to_optuna_with_the_same_support(tmp_path):
    spec = {
        "method": "random",
        "metric": {"name": "val/mIoU", "goal": "maximize"},
        "command": ["msccl", "fit", "${args}"],
        "parameters": {
            "a": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
            "b": {"min": 2, "max": 5},  # ints: int_uniform, as W&B infers
            "c": {"min": 0.0, "max": 1.0},  # floats: uniform
            "d": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
            "e": {"distribution": "log_uniform", "min": 0.0, "max": 2.0},  # exponents: e^0 .. e^2
            "f": {"distribution": "q_log_uniform_values", "min": 10, "max": 1000, "q": 10},
            "g": {"values": [[1.0, 0.5], [1.0, 1.0]]},
            "h": {"value": "fixed"},
        },
    }
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(spec))
    draws = proposals(Sweep.load(file), count=40)
    assert all(1e-4 <= d["a"] <= 1e-1 for d in draws) and min(d["a"] for d in draws) < 1e-3
    assert {d["b"] for d in draws} == {2, 3, 4, 5}
    assert all(0 <= d["c"] <= 1 for d in draws)
    assert {d["d"] for d in draws} <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert all(1 <= d["e"] <= math.e**2 for d in draws)
    assert all(isinstance(d["f"], int) and d["f"] % 10 == 0 for d in draws)
    assert {d["g"] for d in draws} == {"[1.0, 0.5]", "[1.0, 1.0]"} and {d["h"] for d in draws} == {"fixed"}
    assert Sweep.arguments({"x.y": [1.0, 0.5], "z": True}) == ["--x.y=[1.0, 0.5]", "--z=True"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "hyperband"}, "method"),
        ({"parameters": {"a": {"distribution": "normal", "mu": 0, "sigma": 1}}}, "'a'.*normal"),
        ({"command": ["${env}", "${interpreter}", "${program}", "${args}"]}, "not supported"),
        ({"metric": {"goal": "maximize"}}, "metric.name"),
        ({"method": "grid", "parameters": {"a": {"min": 0.1, "max": 1.0}}}, "grid"),
    ],
)
def test_sweep_files_the_local_runner_cannot_run_are_refused_by_name(tmp_path, change, message):
    spec = {"method": "random", "metric": {"name": "m"}, "command": ["msccl", "fit", "${args}"]} | change
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(spec))
    with pytest.raises(SweepError, match=message):
        Sweep.load(file).command_line({})


def test_a_two_trial_local_sweep_runs_fits_and_ranks_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    sweep_dir = tmp_path / "sweep"
    sweep_file = str(REPO / "conf" / "sweeps" / "learning_rate.yaml")
    code = main([sweep_file, "--count", "2", "--sweep-dir", str(sweep_dir), *TINY_SYNTHETIC])
    printed = capsys.readouterr().out
    assert code == 0, printed
    study = optuna.load_study(study_name="learning_rate", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    for trial in trials:
        run_dir = sweep_dir / f"trial_{trial.number:03d}"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert trial.value == summary["val/mIoU"] and 0 <= trial.value <= 1
        assert (run_dir / "config.yaml").is_file() and list((run_dir / "checkpoints").glob("last.ckpt"))
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        lr = config["model"]["init_args"]["optimizer"]["init_args"]["lr"]
        assert lr == pytest.approx(trial.params["model.init_args.optimizer.init_args.lr"])
    assert "best trials of sweep learning_rate (2 complete, 0 failed" in printed
    assert not (Path(REPO) / "runs" / "sweeps").exists()


def test_msccl_sweep_finds_the_sweeps_configs_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # conf/synthetic.yaml does not exist from here
    sweep_file = str(REPO / "conf" / "sweeps" / "learning_rate.yaml")
    assert main([sweep_file, "--count", "1", "--dry-run", "--config", "mine.yaml"]) == 0
    printed = capsys.readouterr().out
    assert f"--config {REPO / 'conf' / 'synthetic.yaml'} " in printed
    assert "--config mine.yaml" in printed  # the user's own arguments stay as given
