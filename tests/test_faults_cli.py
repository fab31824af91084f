"""Issue 11, the command-line side: what a user types never loses or corrupts a run, and every mistake is
one line naming the setting or file, with a non-zero exit and no stray run directory."""

from __future__ import annotations

import io
import shutil
import socket
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import Callback

from msccl.cli import build_cli, main
from msccl.training.checkpoint import (
    SEAL,
    AtomicCheckpointIO,
    CheckpointError,
    load_checkpoint,
    save_sealed,
    verify_checkpoint,
)
from msccl.training.run_dir import configure_run_dir
from tests.conftest import REPO, TINY_SYNTHETIC

ONE_BATCH = ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
NO_BATCH = ["--trainer.limit_train_batches=0", "--trainer.limit_val_batches=0"]  # load the checkpoint only


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny finished run (1 step), shared: tests copy what they need from it."""
    root = tmp_path_factory.mktemp("trained") / "runs" / "synthetic"
    cli = build_cli(["fit", *TINY_SYNTHETIC, *ONE_BATCH, f"--trainer.default_root_dir={root}"])
    return cli.run_dir


def _copy_run(run: Path, folder: Path) -> Path:
    """`run`'s config, metrics and last.ckpt as `folder/runs/synthetic/version_0` (the layout TINY uses)."""
    copy = folder / "runs" / "synthetic" / "version_0"
    (copy / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt"):
        shutil.copy2(run / name, copy / name)
    return copy


def _runs(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "runs" / "synthetic").glob("version_*"))


def _one_line_error(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """Run `msccl ARGS`; it must exit 1 with exactly one `msccl: error:` line and no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("msccl: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- item 1: only `last`, a run's own checkpoint or --run_dir continue a run -------------------------
def test_fit_from_a_checkpoint_outside_the_runs_starts_a_new_run_and_leaves_the_old_one_alone(
    trained_run, in_tmp_dir, capsys
):
    run = _copy_run(trained_run, in_tmp_dir)
    outside = in_tmp_dir / "downloaded.ckpt"
    shutil.copy2(run / "checkpoints" / "last.ckpt", outside)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    message = _one_line_error(capsys, ["fit", *TINY_SYNTHETIC, f"--ckpt_path={in_tmp_dir / 'missing.ckpt'}"])
    assert "missing.ckpt" in message and _runs(in_tmp_dir) == ["version_0"]  # refused before any folder

    cli = build_cli(["fit", *TINY_SYNTHETIC, *ONE_BATCH, f"--ckpt_path={outside}"])
    assert cli.run_dir.name == "version_1" and cli.trainer.ckpt_path == str(outside)  # its state, a new run
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# ---- item 2: two runs started together get two directories; temp files of live processes are kept --
def test_runs_started_together_reserve_different_directories(tmp_path):
    def placed_config() -> Namespace:
        logger = Namespace(
            class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir="x")
        )
        trainer = Namespace(default_root_dir=str(tmp_path / "root"), logger=logger, callbacks=None)
        return Namespace(trainer=trainer)

    start, chosen = threading.Barrier(8), []

    def start_a_run() -> None:
        config = placed_config()
        start.wait()
        chosen.append(configure_run_dir(config, None, False)[0])

    threads = [threading.Thread(target=start_a_run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in chosen) == [f"version_{n}" for n in range(8)]
    assert all(p.is_dir() for p in chosen)  # reserved, not merely named


def test_a_save_removes_only_temporary_files_of_dead_processes(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    host = socket.gethostname()
    live = folder / f".last.ckpt.tmp-{host}-1"  # pid 1 always exists: another run saving into this folder
    dead = folder / f".last.ckpt.tmp-{host}-999999999"  # above any pid limit: left by a killed run
    elsewhere = folder / ".last.ckpt.tmp-another-host-999999999"  # a process of another machine
    for file in (live, dead, elsewhere):
        file.write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, folder / "last.ckpt")
    assert live.is_file() and elsewhere.is_file() and not dead.exists()


# ---- item 4: `last` means the same in every subcommand -----------------------------------------------
def test_last_resolves_to_the_newest_run_in_validate_and_is_an_error_where_there_is_none(
    trained_run, in_tmp_dir, capsys
):
    empty = in_tmp_dir / "empty"
    empty.mkdir()
    for subcommand in ("validate", "test", "predict"):
        extra = [f"--output={empty / 'out'}"] * (subcommand == "predict")
        root = f"--trainer.default_root_dir={empty / 'runs'}"
        message = _one_line_error(capsys, [subcommand, *TINY_SYNTHETIC, root, *extra, "--ckpt_path=last"])
        assert "last.ckpt" in message
    assert sorted(p.name for p in empty.iterdir()) == []  # nothing created

    run = _copy_run(trained_run, in_tmp_dir)
    cli = build_cli(["validate", *TINY_SYNTHETIC, *NO_BATCH, "--ckpt_path=last"])
    assert Path(cli.trainer.ckpt_path).resolve() == (run / "checkpoints" / "last.ckpt").resolve()
    weights = cli.model.state_dict()  # the run's weights were evaluated, not random ones
    expected = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(weights[name], tensor) for name, tensor in expected.items())


# ---- item 7: settings given with --ckpt_path are applied, or refused by name ----------------------------
def test_settings_given_with_a_checkpoint_are_applied_and_recorded_or_refused(
    trained_run, in_tmp_dir, capsys
):
    run = _copy_run(trained_run, in_tmp_dir)
    last = run / "checkpoints" / "last.ckpt"
    weight, lr = "--model.init_args.contrastive_weight=0.3", "--model.init_args.optimizer.init_args.lr=0.005"
    cli = build_cli(["validate", *TINY_SYNTHETIC, *NO_BATCH, f"--ckpt_path={last}", weight, lr])
    assert cli.model.contrastive_weight == 0.3
    assert "applying model.init_args.contrastive_weight=0.3" in capsys.readouterr().err
    recorded = yaml.safe_load((cli.run_dir / "config.yaml").read_text())["model"]["init_args"]
    assert recorded["contrastive_weight"] == 0.3 and recorded["optimizer"]["init_args"]["lr"] == 0.005

    unet = "--model.init_args.net.class_path=msccl.models.Unet"
    message = _one_line_error(capsys, ["validate", *TINY_SYNTHETIC, f"--ckpt_path={last}", unet])
    assert "model.init_args.net.class_path='msccl.models.Unet'" in message and "msccl.models.FPN" in message
    four_classes = "--data.init_args.num_classes=4"
    message = _one_line_error(capsys, ["test", *TINY_SYNTHETIC, f"--ckpt_path={last}", four_classes])
    assert "8 classes" in message and "has 4" in message
    message = _one_line_error(capsys, ["fit", *TINY_SYNTHETIC, "--model.init_args.num_classes=5"])
    assert "model.init_args.num_classes=5" in message
    assert _runs(in_tmp_dir) == ["version_0", "version_1"]  # the refused runs left nothing


# ---- clear errors, nothing left behind -------------------------------------------------------------------
def test_a_refused_checkpoint_in_a_fresh_folder_leaves_no_runs_folder(trained_run, in_tmp_dir, capsys):
    last = shutil.copy2(trained_run / "checkpoints" / "last.ckpt", in_tmp_dir / "eight_classes.ckpt")
    four_classes = ["--data.init_args.num_classes=4", f"--ckpt_path={last}"]
    message = _one_line_error(capsys, ["fit", *TINY_SYNTHETIC, *four_classes])
    assert "8 classes" in message and "has 4" in message
    assert sorted(p.name for p in in_tmp_dir.iterdir()) == ["eight_classes.ckpt"]  # no empty runs/synthetic/
    (in_tmp_dir / "runs" / "synthetic" / "version_7").mkdir(parents=True)  # another run's folder stays
    _one_line_error(capsys, ["fit", *TINY_SYNTHETIC, *four_classes])
    assert _runs(in_tmp_dir) == ["version_7"]


def _truncated(last: Path, folder: Path) -> Path:
    path = folder / "truncated.ckpt"
    path.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return path


def _altered(last: Path, folder: Path) -> Path:
    """One bit flipped in the middle of a tensor: torch still loads it, silently different."""
    with zipfile.ZipFile(last) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(last.read_bytes())
    data[record.header_offset + 200 + record.file_size // 2] ^= 1  # past the local header, inside the data
    path = folder / "altered.ckpt"
    path.write_bytes(bytes(data))
    return path


def _not_a_checkpoint(last: Path, folder: Path) -> Path:
    path = folder / "weights.pt"
    torch.save({"weight": torch.ones(2)}, path)  # a torch file, but no Lightning checkpoint
    return path


def _yaml_error(last: Path, folder: Path) -> Path:
    path = folder / "broken.yaml"
    path.write_text("trainer:\n  max_epochs: [1\n  devices: 1\n")
    return path


CITYSCAPES = [
    f"--config={REPO / 'conf' / 'data' / 'cityscapes.yaml'}",
    "--data.init_args.root=no/such/folder",
]


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--data.init_args.batch_size=0"], "data.init_args.batch_size"),
        (["--model.init_args.optimizer.init_args.lr=-0.1"], "model.init_args.optimizer"),
        (CITYSCAPES, "no/such/folder"),
        (["--ckpt_path={truncated}"], "truncated.ckpt"),
        (["--ckpt_path={altered}"], "altered.ckpt"),
        (["--ckpt_path={not_a_checkpoint}"], "weights.pt"),
        (["--config={yaml_error}"], "broken.yaml: line 3"),
    ],
    ids=["batch-0", "negative-lr", "root-missing", "truncated", "altered", "not-a-checkpoint", "yaml"],
)
def test_a_mistake_is_one_line_with_exit_1_and_leaves_no_run_directory(
    trained_run, in_tmp_dir, capsys, arguments, named
):
    files = {
        name: make(trained_run / "checkpoints" / "last.ckpt", in_tmp_dir)
        for name, make in [
            ("truncated", _truncated),
            ("altered", _altered),
            ("not_a_checkpoint", _not_a_checkpoint),
            ("yaml_error", _yaml_error),
        ]
    }
    arguments = [argument.format(**files) for argument in arguments]
    message = _one_line_error(capsys, ["fit", *TINY_SYNTHETIC, *ONE_BATCH, *arguments])
    assert named in message and "weights_only" not in message
    assert not (in_tmp_dir / "runs").exists() or _runs(in_tmp_dir) == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty"),
        (None, "is a folder"),
        (b"\x80\x04\x95binary\x00\xff", "is not a text file"),
        (b"- fit\n- 3\n", "holds a list, not a mapping of settings"),
    ],
    ids=["empty", "folder", "binary", "list"],
)
def test_a_config_file_that_is_no_config_is_one_line_naming_it(in_tmp_dir, capsys, content, says):
    path = in_tmp_dir / "my config.yaml"
    path.mkdir() if content is None else path.write_bytes(content)
    for form in (["--config", str(path)], [f"--config={path}"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *form])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("msccl: error:") and len(err.splitlines()) == 1, err  # no usage text
        assert f"--config {path} {says}" in err


class UserErrorAtStep(Callback):
    """Raises a user error (ValueError) once optimiser step `step` is done, mid-epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise ValueError(f"a bad value at step {self.step}")


def test_an_error_mid_epoch_starts_its_own_line_after_the_progress_bar(in_tmp_dir, capsys, monkeypatch):
    failing = [f"--trainer.callbacks+={__name__}.UserErrorAtStep", "--trainer.callbacks.step=1"]
    args = ["fit", *TINY_SYNTHETIC, "--trainer.enable_progress_bar=true", *failing, "--run_dir=run"]
    monkeypatch.setattr(sys, "stderr", sys.stdout)  # one stream, as on a terminal
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    output = capsys.readouterr().out
    assert "Epoch 0" in output  # the bar was drawn
    errors = [line for line in output.splitlines() if "msccl: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("msccl: error: a bad value at step 1"), output[-500:]


def test_debug_shows_the_traceback_instead(in_tmp_dir):
    with pytest.raises(CheckpointError):
        main(["fit", *TINY_SYNTHETIC, "--ckpt_path=missing.ckpt", "--debug"])


def test_a_checkpoint_altered_after_saving_is_refused_though_torch_loads_it(trained_run, tmp_path):
    altered = _altered(trained_run / "checkpoints" / "last.ckpt", tmp_path)
    torch.load(altered, weights_only=True)  # torch alone does not notice
    with pytest.raises(CheckpointError, match="altered, damaged"):
        load_checkpoint(altered)
    load_checkpoint(trained_run / "checkpoints" / "last.ckpt")  # the original passes


class _RecordingFile(io.BytesIO):
    """Keeps the file's content after every write: the states a kill during the save can leave."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[bytes] = []

    def write(self, data) -> int:
        written = super().write(data)
        self.states.append(self.getvalue())
        return written


def test_no_state_of_an_interrupted_save_loads_and_every_complete_checkpoint_has_its_digest(tmp_path):
    file = _RecordingFile()
    save_sealed({"state_dict": {"w": torch.arange(40.0)}, "step": 1}, file)
    sealed = file.getvalue()
    assert zipfile.ZipFile(io.BytesIO(sealed)).comment.startswith(SEAL)
    # written front to back: each state on disk is a prefix of the sealed file (torch's end record is held
    # back until the seal), so a file that is a complete zip without its digest never exists
    assert all(sealed.startswith(state) for state in file.states)
    path = tmp_path / "partial.ckpt"
    for end in range(len(sealed)):  # a kill can cut the file at any byte
        path.write_bytes(sealed[:end])
        with pytest.raises(CheckpointError, match="truncated|cut short"):
            verify_checkpoint(path)
    path.write_bytes(sealed)
    assert load_checkpoint(path)["step"] == 1


def test_msccl_export_refuses_an_altered_checkpoint_in_one_line(trained_run, tmp_path, capsys):
    altered = _altered(trained_run / "checkpoints" / "last.ckpt", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", f"--ckpt_path={altered}", f"--output={tmp_path / 'model.pt'}", "--format", "onnx"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("msccl export: error: checkpoint") and "altered" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "model.pt").exists()


# ---- a full disk ------------------------------------------------------------------------------------
def _mount_point(folder: Path) -> Path:
    folder = folder.resolve()
    while not folder.is_mount():
        folder = folder.parent
    return folder


def test_a_full_disk_during_a_save_is_one_line_keeps_the_last_checkpoint_and_prints_the_resume_command(
    in_tmp_dir, capsys, monkeypatch
):
    import msccl.training.checkpoint as checkpoint_module

    sealed = checkpoint_module.save_sealed

    def full_after_step_1(checkpoint, file):
        if checkpoint["global_step"] <= 2:  # the first epoch's checkpoints
            return sealed(checkpoint, file)
        file.write(b"PK\x03\x04" + bytes(1000))  # part of the file, then what torch raises on ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint_module, "save_sealed", full_after_step_1)
    args = [
        "fit",
        *TINY_SYNTHETIC,
        "--trainer.limit_train_batches=2",
        "--trainer.max_epochs=2",
        "--run_dir=run",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("msccl: error:")]
    assert len(errors) == 1 and "Traceback" not in err and "inline_container" not in err, err
    last = (in_tmp_dir / "run" / "checkpoints" / "last.ckpt").resolve()
    size = max(file.stat().st_size for file in last.parent.glob("*.ckpt"))  # the estimate: the largest
    assert f"no space left to save checkpoint {in_tmp_dir / 'run' / 'checkpoints'}" in errors[0]
    assert f"the file system mounted at {_mount_point(in_tmp_dir)} has" in errors[0]
    assert f"needs about {size / 2**20:.1f} MiB" in errors[0]
    assert "is kept" in errors[0] or "no file was replaced" in errors[0]
    verify_checkpoint(last)  # the last good checkpoint, intact, and no temporary file beside it
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert not list(last.parent.glob(".*tmp*"))
    lines = err.splitlines()
    resume = lines[lines.index("resume with:") + 1].split()
    assert resume == ["msccl", *args, f"--ckpt_path={last}"]
    monkeypatch.setattr(checkpoint_module, "save_sealed", sealed)  # space freed: the command finishes the run
    build_cli(resume[1:])
    assert torch.load(last, weights_only=False)["global_step"] == 4


def test_a_save_is_refused_before_writing_when_the_last_checkpoint_would_not_fit(tmp_path, monkeypatch):
    import msccl.training.checkpoint as checkpoint_module

    io_ = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io_.save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "step": 1}, path)
    before = path.read_bytes()
    free = path.stat().st_size - 1
    monkeypatch.setattr(
        checkpoint_module.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(0, 0, free)
    )
    with pytest.raises(checkpoint_module.DiskFullError, match=r"has 0.0 MiB free and the checkpoint needs"):
        io_.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "step": 2}, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]

    def no_space(checkpoint, file):  # what Python's file gives
        raise OSError(28, "No space left on device")

    monkeypatch.undo()
    monkeypatch.setattr(checkpoint_module, "save_sealed", no_space)
    with pytest.raises(checkpoint_module.DiskFullError, match="the previous last.ckpt is kept"):
        io_.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "step": 2}, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
