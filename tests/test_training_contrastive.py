"""The contrastive loss inside the training module: wiring, weights, logging, schedule, heads."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from msccl.contrastive import MSCSContrastiveLoss
from msccl.data import SyntheticDataModule
from msccl.models import FPN
from msccl.training import ContrastiveWeightSchedule, SegmentationModule
from tests.conftest import TINY_SYNTHETIC, quiet_trainer

NUM_CLASSES = 4


def _net(num_classes: int) -> FPN:
    return FPN(num_classes, pyramid_channels=32, segmentation_channels=32)


def _contrastive(num_classes: int, ignore_index: int) -> MSCSContrastiveLoss:
    return MSCSContrastiveLoss(num_classes, ignore_index, min_views_per_class=2)


def _module(**kwargs) -> SegmentationModule:
    return SegmentationModule(_net, NUM_CLASSES, contrastive=_contrastive, projection_dim=16, **kwargs)


def _batch(size: int = 128, count: int = 4) -> dict:
    data = SyntheticDataModule(num_classes=NUM_CLASSES, image_size=size, num_train=count, batch_size=count)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def test_contrastive_gradient_reaches_heads_and_every_tapped_stage():
    """Peers' bug: a term computed but multiplied by 0. Here only the contrastive term is backpropagated."""
    torch.manual_seed(0)
    module = _module()
    batch = _batch()
    output = module.net(batch["image"], return_taps=True)
    module.compute_losses(output, batch["label"])["contrastive"].backward()
    for head in module.projection_heads:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    encoder = module.net.encoder
    encoder_grads = [encoder.layer1[0].conv1.weight.grad, encoder.layer4[0].conv1.weight.grad]
    assert all(g is not None and g.abs().sum() > 0 for g in encoder_grads)
    assert module.net.segmentation_head[0].weight.grad is None  # the decoder is not on this path


def test_heads_are_built_from_announced_taps_and_never_run_at_inference():
    module = _module()
    announced = [t.channels for t in module.net.taps]
    assert [h.in_channels for h in module.projection_heads] == announced
    calls = []
    module.projection_heads.register_forward_hook(lambda *args: calls.append(1))
    module.eval()
    with torch.no_grad():
        logits = module(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, NUM_CLASSES, 64, 64) and not calls


def test_ce_only_module_has_no_heads_and_no_contrastive_terms():
    module = SegmentationModule(_net, NUM_CLASSES)
    batch = _batch()
    losses = module.compute_losses(module.net(batch["image"], return_taps=True), batch["label"])
    assert module.projection_heads is None and set(losses) == {"ce", "loss"}


def test_schedule_factor_delays_and_ramps():
    schedule = ContrastiveWeightSchedule(start_step=3, ramp_steps=4)
    assert [schedule.factor(s) for s in range(9)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert [ContrastiveWeightSchedule().factor(s) for s in (0, 10)] == [1.0, 1.0]
    with pytest.raises(ValueError):
        ContrastiveWeightSchedule(start_step=-1)


def test_schedule_drives_the_logged_weight_and_its_state_travels_in_the_checkpoint(tmp_path):
    L.seed_everything(0)
    data = SyntheticDataModule(num_classes=NUM_CLASSES, image_size=64, num_train=8, num_val=4, batch_size=4)
    weights = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            weights.append(module.effective_contrastive_weight)

    def trainer(max_steps: int, schedule: ContrastiveWeightSchedule) -> L.Trainer:
        return quiet_trainer(
            max_steps=max_steps,
            callbacks=[schedule, Record()],
            default_root_dir=tmp_path,
            enable_checkpointing=True,
            limit_val_batches=0,
        )

    first = trainer(2, ContrastiveWeightSchedule(start_step=1, ramp_steps=2))
    first.fit(_module(), data)
    checkpoint = tmp_path / "two.ckpt"
    first.save_checkpoint(checkpoint)
    assert "ContrastiveWeightSchedule" in str(torch.load(checkpoint, weights_only=False)["callbacks"])
    trainer(4, ContrastiveWeightSchedule(start_step=1, ramp_steps=2)).fit(
        _module(), data, ckpt_path=checkpoint, weights_only=False
    )
    assert weights == pytest.approx([0.0, 0.05, 0.1, 0.1])
    with pytest.raises(ValueError, match="contrastive schedule"):
        trainer(6, ContrastiveWeightSchedule(start_step=5)).fit(
            _module(), data, ckpt_path=checkpoint, weights_only=False
        )


@pytest.mark.parametrize(("scale_weights", "expected"), [(None, [1.0, 0.7]), ([1.0, 0.5], [1.0, 0.5])])
def test_scale_weights_follow_the_taps_and_a_given_list_must_match_them(scale_weights, expected):
    """docs/method.md A4: the default follows the network's taps (the paper's first S weights); a list of
    the wrong length fails when the module is built, naming the setting, not at the first step."""

    def two_taps(num_classes: int) -> FPN:
        return FPN(num_classes, pyramid_channels=32, segmentation_channels=32, tap_stages=(2, 5))

    def loss(weights):
        return lambda n, ignore: MSCSContrastiveLoss(n, ignore, scale_weights=weights)

    module = SegmentationModule(two_taps, NUM_CLASSES, contrastive=loss(scale_weights), projection_dim=16)
    assert module.contrastive_loss.scale_weights_for(len(module.net.taps)) == expected
    with pytest.raises(ValueError, match="scale_weights has 4 entries but the model gives 2 scales"):
        SegmentationModule(two_taps, NUM_CLASSES, contrastive=loss([1.0, 0.7, 0.4, 0.1]), projection_dim=16)


def test_a_cross_scale_only_run_trains_with_a_weight_list_for_other_taps(in_tmp_dir):
    """multi_scale=False leaves scale_weights unused: the base recipe's 4 weights with 3 taps train (the
    check once stopped such a run at its first step)."""
    from msccl.cli import main

    main(
        [
            "fit",
            *TINY_SYNTHETIC,
            "--trainer.max_steps=1",
            "--model.init_args.net.init_args.tap_stages=[3, 4, 5]",
            "--model.init_args.contrastive.init_args.multi_scale=false",
            "--model.init_args.contrastive.init_args.scale_weights=[1.0, 0.7, 0.4, 0.1]",
            "--run_dir=cross",
        ]
    )
    checkpoint = torch.load(in_tmp_dir / "cross" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 1
    logged = (in_tmp_dir / "cross" / "metrics.csv").read_text().splitlines()[0]
    assert "cs/s0-s2" in logged and "ms/s0" not in logged
