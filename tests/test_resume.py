from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Callback

from msccl.cli import build_cli
from msccl.data import SyntheticDataModule
from msccl.data.sampling import EpochSampler, RepeatFactorSampler, ResumableDataLoader
from msccl.training.callbacks import RandomStateCheckpoint
from msccl.training.checkpoint import AtomicCheckpointIO
from tests.conftest import TINY_SYNTHETIC


class CrashAtStep(Callback):
    """Dies after `step` optimiser steps, like a job killed mid-epoch (before that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt(f"simulated kill at step {self.step}")


def _checkpoint_every_two_steps(folder: Path) -> str:
    config = {
        "trainer": {
            "max_epochs": 2,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 2},
                }
            ],
        }
    }
    path = folder / "every_two_steps.yaml"
    path.write_text(yaml.safe_dump(config))
    return f"--config={path}"


def test_a_run_killed_mid_epoch_resumes_from_last_to_the_same_weights(in_tmp_dir):
    # 3 batches per epoch, 2 epochs; checkpoints at steps 2, 4, 6; flip augmentation and dropout on
    args = [*TINY_SYNTHETIC, _checkpoint_every_two_steps(in_tmp_dir)]
    build_cli(["fit", *args, "--run_dir=uninterrupted"])
    killed = [*args, f"--trainer.callbacks+={__name__}.CrashAtStep", "--trainer.callbacks.step=5"]
    with pytest.raises(SystemExit):  # Lightning turns the interrupt into a graceful exit
        build_cli(["fit", *killed])
    run = in_tmp_dir / "runs" / "synthetic" / "version_0"
    # the last checkpoint is from step 4: one batch into the second epoch
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4

    resumed = build_cli(["fit", *args, "--ckpt_path=last"])  # finds version_0 by itself
    assert resumed.run_dir.resolve() == run.resolve() and not (run.parent / "version_1").exists()
    assert isinstance(resumed.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert (run / "metrics.1.csv").is_file() and (run / "metrics.csv").is_file()  # the first part is kept

    expected = torch.load(in_tmp_dir / "uninterrupted" / "checkpoints" / "last.ckpt", weights_only=False)
    actual = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert actual["global_step"] == expected["global_step"] == 6
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), name
    momentum = [state["momentum_buffer"] for state in expected["optimizer_states"][0]["state"].values()]
    resumed_momentum = [state["momentum_buffer"] for state in actual["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, resumed_momentum, strict=True))
    assert actual["lr_schedulers"] == expected["lr_schedulers"]

    # the run's own config.yaml continues it too (it keeps the settings as given, not the placed ones)
    saved = [f"--config={run / 'config.yaml'}", _checkpoint_every_two_steps(in_tmp_dir)]
    again = build_cli(["fit", *saved, "--trainer.max_epochs=3", "--ckpt_path=last"])
    assert again.run_dir.resolve() == run.resolve() and again.trainer.global_step == 9


def test_training_order_and_augmentation_depend_only_on_seed_and_epoch():
    data = SyntheticDataModule(num_classes=4, image_size=16, num_train=8, batch_size=2)
    data.setup("fit")

    def epoch_batches(loader: ResumableDataLoader, epoch: int) -> list[torch.Tensor]:
        loader.sampler.set_epoch(epoch)
        return [batch["image"] for batch in loader]

    a, b = (ResumableDataLoader(data.datasets["train"], 2, seed=7) for _ in range(2))
    first = epoch_batches(a, 1)
    assert all(torch.equal(x, y) for x, y in zip(first, epoch_batches(b, 1), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first, epoch_batches(a, 2), strict=True))
    # resuming after two batches of epoch 1 hands out exactly the remaining batches
    a.load_state_dict({"epoch": 1, "samples": 4, "batch_size": 2, "processes": 1})
    rest = [batch["image"] for batch in a]
    assert len(rest) == 2 and all(torch.equal(x, y) for x, y in zip(rest, first[2:], strict=True))
    assert a.state_dict() == {"epoch": 1, "samples": 8, "batch_size": 2, "processes": 1}
    # a checkpoint taken at the end of an epoch resumes at the start of the next one
    a.load_state_dict({"epoch": 1, "samples": 8, "batch_size": 2, "processes": 1})
    assert a.sampler.epoch == 2 and a.sampler.start == 0
    # workers do not change the batches: every sample's augmentation has its own seed
    with_workers = ResumableDataLoader(data.datasets["train"], 2, seed=7, num_workers=2)
    assert all(torch.equal(x, y) for x, y in zip(epoch_batches(with_workers, 1), first, strict=True))


def test_ranks_split_a_repeat_factor_epoch_and_every_repeat_gets_its_own_augmentation():
    factors = np.array([1.0, 3.0, 1.0, 2.0, 1.0])  # 8 indices per epoch, image 1 three times
    epoch = RepeatFactorSampler(factors, seed=3)
    epoch.set_epoch(4)
    expected = list(epoch)
    shares = []
    for rank in (0, 1):
        order = RepeatFactorSampler(factors, seed=3)
        sampler = EpochSampler(range(5), seed=3, order=order, num_replicas=2, rank=rank)
        sampler.set_epoch(4)
        assert len(sampler) == 4
        shares.append(list(sampler))
    indices = [index for share in shares for index, _ in share]
    seeds = {seed for share in shares for _, seed in share}
    assert sorted(indices) == sorted(expected) and [i for i, _ in shares[0]] == expected[0::2]
    assert len(seeds) == 8  # the three visits of image 1 are augmented differently


def test_an_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def dies_half_way(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}


def test_a_one_process_position_resumes_on_two_processes_at_the_next_unseen_samples():
    data = SyntheticDataModule(num_classes=4, image_size=16, num_train=12, batch_size=4)
    data.setup("fit")
    one = ResumableDataLoader(data.datasets["train"], 4, seed=7)
    names = [batch["name"] for batch in one]  # epoch 0 on one process: 3 batches of 4
    saved = {"epoch": 0, "samples": 4, "batch_size": 4, "processes": 1}
    ranks = [ResumableDataLoader(data.datasets["train"], 2, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    for loader in ranks:
        loader.load_state_dict(saved)  # 2 per batch x 2 processes: the same 4 samples per step
    shares = [[batch["name"] for batch in loader] for loader in ranks]
    # rank r takes positions 4 + r, 6 + r, ...: together each step is the one-process run's next batch
    for step, expected in enumerate(names[1:]):
        assert sorted([*shares[0][step], *shares[1][step]]) == sorted(expected)
    assert shares[0][0] == [names[1][0], names[1][2]] and shares[1][0] == [names[1][1], names[1][3]]
    assert ranks[0].state_dict() == {"epoch": 0, "samples": 12, "batch_size": 2, "processes": 2}

    other = ResumableDataLoader(data.datasets["train"], 8, seed=7)
    with pytest.raises(ValueError, match=r"data.init_args.batch_size=8.*batch_size x processes = 4"):
        other.load_state_dict(saved)  # mid-epoch with 8 per step: refused, naming the setting
    other.load_state_dict({**saved, "samples": 12})  # at the epoch's end: any size, the next epoch
    assert other.sampler.epoch == 1 and other.sampler.start == 0


def test_resuming_mid_epoch_with_another_batch_size_is_one_line_naming_it(in_tmp_dir, capsys):
    from msccl.cli import main

    build_cli(["fit", *TINY_SYNTHETIC, "--trainer.max_steps=1", "--run_dir=a"])  # 1 batch of 4 of 3
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *TINY_SYNTHETIC, "--data.init_args.batch_size=8", "--ckpt_path=a/checkpoints/last.ckpt"])
    assert exit_info.value.code == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("msccl: error:")]
    assert len(error) == 1 and "4 samples into epoch 0" in error[0] and "batch_size=8" in error[0]


def test_a_position_is_dropped_when_the_trainer_starts_another_epoch():
    """A checkpoint at the end of an epoch cut short by limit_train_batches holds a mid-epoch position;
    the trainer goes on with the next epoch, which starts at its beginning, like the uninterrupted run."""
    data = SyntheticDataModule(num_classes=4, image_size=16, num_train=12, batch_size=4)
    data.setup("fit")
    fresh = ResumableDataLoader(data.datasets["train"], 4, seed=7)
    fresh.sampler.set_epoch(1)
    expected = [batch["name"] for batch in fresh]
    resumed = ResumableDataLoader(data.datasets["train"], 4, seed=7)
    resumed.load_state_dict({"epoch": 0, "samples": 8, "batch_size": 4, "processes": 1})
    resumed.sampler.set_epoch(1)  # what Lightning does at the start of epoch 1
    assert [batch["name"] for batch in resumed] == expected and len(expected) == 3
    resumed.load_state_dict({"epoch": 0, "samples": 8, "batch_size": 4, "processes": 1})
    resumed.sampler.set_epoch(0)  # the same epoch: it continues at sample 8
    assert len(list(resumed)) == 1 and resumed.state_dict()["samples"] == 12


@pytest.mark.parametrize(("saved", "processes"), [(2, 2), (2, 1), (1, 2)])
def test_random_states_each_rank_its_own_or_rank_0s_for_another_process_count(saved, processes, caplog):
    """A checkpoint of 2 processes resumed on 2 gives rank r its own state; with another count every
    process takes rank 0's (a run started on that count seeds all alike: seed_everything), and says so."""
    states = []
    for seed in range(saved):  # the states of the saved ranks
        torch.manual_seed(seed)
        states.append(RandomStateCheckpoint().state_dict()["per_rank"][0])
    for rank in range(processes):
        callback = RandomStateCheckpoint()
        callback.load_state_dict({"per_rank": states})
        callback.on_train_start(SimpleNamespace(global_rank=rank, world_size=processes), None)
        expected = states[rank] if saved == processes else states[0]
        assert torch.equal(torch.get_rng_state(), expected["torch"])
    said = f"resuming on {processes} processes from a checkpoint of {saved}: every process takes"
    assert (said in caplog.text) == (saved != processes)


class RecordNames(Callback):
    """Appends the names of every training batch's images to `<path>` (one line a batch)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with self.path.open("a") as file:
            file.write(" ".join(batch["name"]) + "\n")


def test_resuming_with_another_accumulation_continues_at_the_next_unseen_samples(in_tmp_dir):
    """Accumulation groups the same batches into optimiser steps: changing it changes neither the order
    nor the position, so the resumed run sees exactly the batches the first run had not seen yet."""
    args = [
        *TINY_SYNTHETIC,
        _checkpoint_every_two_steps(in_tmp_dir),
        f"--trainer.callbacks+={__name__}.RecordNames",
    ]
    build_cli(["fit", *args, "--trainer.callbacks.path=whole.txt", "--run_dir=whole"])
    seen = (in_tmp_dir / "whole.txt").read_text().splitlines()
    assert len(seen) == 6  # two epochs of 3 batches
    crash = [f"--trainer.callbacks+={__name__}.CrashAtStep", "--trainer.callbacks.step=3"]
    with pytest.raises(SystemExit):  # killed after step 3; the checkpoint is from step 2
        build_cli(["fit", *args, "--trainer.callbacks.path=a.txt", *crash])
    resume = ["--trainer.accumulate_grad_batches=2", "--ckpt_path=last"]
    build_cli(["fit", *args, "--trainer.callbacks.path=b.txt", *resume])
    assert (in_tmp_dir / "a.txt").read_text().splitlines() == seen[:3]
    assert (in_tmp_dir / "b.txt").read_text().splitlines() == seen[2:]
