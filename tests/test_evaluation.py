from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from msccl.cli import build_cli
from msccl.data import SyntheticDataModule
from msccl.models import FPN, SegmentationNet, Tap
from msccl.training import SegmentationIoU, SegmentationModule
from msccl.training.evaluation import Evaluation, _scaled_size, window_starts
from tests.conftest import REPO, TINY_SYNTHETIC, quiet_trainer

NUM_CLASSES = 3
BIAS = 12.0  # pushes class 0 above the correct logit (10) where a model is "wrong"


class PixelwiseNet(SegmentationNet):
    """A 1x1 convolution: translation- and flip-equivariant by construction."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.taps = (Tap(3, 1),)

    def forward_features(self, x):
        return self.conv(x), None, [x]


def _block_labels(height: int, width: int, block: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_CLASSES, (1, height // block, width // block), generator=generator)
    return coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)


def _one_hot_image(labels: torch.Tensor) -> torch.Tensor:
    """An image whose colour is the one-hot label: 10 * image are the correct logits."""
    return nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()


def _miou(logits: torch.Tensor, labels: torch.Tensor) -> float:
    metric = SegmentationIoU(NUM_CLASSES)
    metric.update(logits, labels)
    return metric.compute()["mIoU"].item()


def _biased_where(mask_fn):
    """A model giving the correct logits except where `mask_fn(x)` says it is wrong (class 0 wins)."""

    def infer(x: torch.Tensor) -> torch.Tensor:
        logits = 10 * x
        bias = torch.zeros_like(logits)
        bias[:, 0] = BIAS * mask_fn(x).float()
        return logits + bias

    return infer


def test_window_starts_cover_the_axis_with_the_last_window_flush():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(4, 4, 2) == [0] and window_starts(3, 4, 2) == [0]


@pytest.mark.parametrize(
    "evaluation",
    [
        Evaluation(mode="sliding", crop=(16, 24), stride=(10, 7)),  # uneven overlaps
        Evaluation(mode="sliding", crop=(64, 64)),  # larger than the image: padded
        Evaluation(flip=True),
        Evaluation(mode="sliding", crop=(16, 16), flip=True),
    ],
    ids=["sliding", "sliding-padded", "flip", "sliding-flip"],
)
def test_equivariant_net_gives_whole_image_logits(evaluation):
    torch.manual_seed(0)
    module = SegmentationModule(PixelwiseNet, num_classes=NUM_CLASSES, evaluation=evaluation)
    images = torch.randn(2, 3, 40, 52)
    whole = module(images)
    assert torch.allclose(module.infer(images), whole, atol=1e-5)


def test_multiscale_flip_tta_keeps_an_equivariant_nets_prediction():
    labels = _block_labels(32, 48)
    images = _one_hot_image(labels)
    net = PixelwiseNet(NUM_CLASSES)
    with torch.no_grad():
        net.conv.weight.copy_(10 * torch.eye(NUM_CLASSES)[:, :, None, None])
        net.conv.bias.zero_()
    module = SegmentationModule(lambda c: net, num_classes=NUM_CLASSES)
    evaluation = Evaluation(mode="sliding", crop=(24, 24), scales=(0.5, 0.75, 1.0, 1.5, 2.0), flip=True)
    tta = evaluation(module, images)
    assert tta.shape == (1, NUM_CLASSES, 32, 48) and tta.dtype == torch.float32
    assert torch.equal(tta.argmax(1), module(images).argmax(1))
    assert torch.equal(tta.argmax(1), labels)


@pytest.mark.parametrize(
    ("evaluation", "wrong_where"),
    [
        # only right on the right half of the image: the mirrored pass fixes the left half
        (Evaluation(flip=True), lambda x: (torch.arange(x.shape[-1]) < x.shape[-1] // 2).expand_as(x[:, 0])),
        # only right on inputs up to 32 pixels wide (its training crop): windows of 32 fix it
        (Evaluation(mode="sliding", crop=(32, 32)), lambda x: torch.full_like(x[:, 0], x.shape[-1] > 32)),
        # only right on inputs of 64 pixels or more: the 2x scale fixes the 32-pixel image
        (Evaluation(scales=(1.0, 2.0)), lambda x: torch.full_like(x[:, 0], x.shape[-1] < 64)),
    ],
    ids=["flip", "sliding", "multi-scale"],
)
def test_tta_and_sliding_window_fix_a_model_that_is_right_only_in_one_view(evaluation, wrong_where):
    size = 64 if evaluation.mode == "sliding" else 32
    labels = _block_labels(size, size)
    images = _one_hot_image(labels)
    infer = _biased_where(wrong_where)
    assert _miou(infer(images), labels) < 0.8
    assert _miou(evaluation(infer, images), labels) == 1.0


def test_bad_settings_are_rejected_with_the_setting_named():
    with pytest.raises(ValueError, match="crop"):
        Evaluation(mode="sliding")
    with pytest.raises(ValueError, match="scales"):
        Evaluation(scales=(0.0,))
    with pytest.raises(ValueError, match="mode"):
        Evaluation(mode="tiles")


def test_evaluation_is_a_config_key_that_reaches_the_module(in_tmp_dir):
    cli = build_cli(
        [
            *TINY_SYNTHETIC,
            "--model.init_args.evaluation.mode=sliding",
            "--model.init_args.evaluation.crop=[16,16]",
            "--model.init_args.evaluation.scales=[0.5,1.0]",
            "--model.init_args.evaluation.flip=true",
        ],
        run=False,
    )
    assert cli.model.evaluation == Evaluation(mode="sliding", crop=(16, 16), scales=(0.5, 1.0), flip=True)


class _CountingNet(PixelwiseNet):
    calls = 0

    def forward_features(self, x):
        _CountingNet.calls += 1
        return super().forward_features(x)


def test_fit_validates_on_whole_images_unless_asked_and_validate_uses_the_evaluation():
    data = SyntheticDataModule(num_classes=NUM_CLASSES, image_size=32, num_train=2, num_val=2, batch_size=2)
    module = SegmentationModule(_CountingNet, num_classes=NUM_CLASSES, evaluation=Evaluation(flip=True))
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(module, data)
    assert _CountingNet.calls == 2  # one training step, one validation batch: one pass each
    trainer.validate(module, data)
    assert _CountingNet.calls == 4  # validation with flip TTA: two passes


class GroupedSynthetic(SyntheticDataModule):
    """The synthetic data with class groups, as CaDIS declares anatomy / instruments / rare classes."""

    class_groups = {"textures": (1, 2, 3, 4), "shapes": (5, 6, 7)}


def test_class_groups_are_linked_from_the_data_and_reported(in_tmp_dir, capfd):
    cli = build_cli(["validate", *TINY_SYNTHETIC, f"--data={__name__}.GroupedSynthetic"])
    assert cli.model.class_groups == GroupedSynthetic.class_groups
    metrics = cli.trainer.callback_metrics
    textures = ("fine_stripes", "coarse_stripes", "checker", "speckle")
    present = [metrics[f"val/IoU/{name}"].item() for name in textures if f"val/IoU/{name}" in metrics]
    assert present and metrics["val/mIoU/textures"].item() == pytest.approx(sum(present) / len(present))
    assert "val/mIoU/shapes" in metrics
    printed = capfd.readouterr().out
    assert "mIoU textures" in printed and "mIoU shapes" in printed


def test_a_group_with_an_unknown_class_id_is_rejected():
    with pytest.raises(ValueError, match="class group 'rare'"):
        SegmentationModule(PixelwiseNet, num_classes=3, class_groups={"rare": [1, 7]})


def test_images_of_any_size_are_padded_to_the_networks_stride():
    net = FPN(3, pyramid_channels=32, segmentation_channels=32)
    module = SegmentationModule(lambda c: net, num_classes=3).eval()
    images = torch.randn(1, 3, 45, 70)
    with pytest.raises(RuntimeError, match="size of tensor"):  # the smp FPN alone fails on this size
        module(images)
    with torch.no_grad():
        assert module.infer(images).shape == (1, 3, 45, 70)


class _CountingConvNet(nn.Module):
    """A small conv net (zero padding: not translation-equivariant at the borders, so every window's
    logits differ from the whole image's) that counts its forwards and the images it saw."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, NUM_CLASSES, 3, padding=1),
        )
        self.forwards = self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        self.images += x.shape[0]
        return self.layers(x)


@pytest.mark.parametrize(
    "settings",
    [
        {"mode": "sliding", "crop": (16, 24), "stride": (10, 7)},
        {"mode": "sliding", "crop": (16, 16), "scales": (0.5, 1.0, 1.25), "flip": True},
        {"mode": "sliding", "crop": (48, 64), "scales": (0.75, 1.5)},  # padded at 0.75, windows at 1.5
        {"scales": (0.5, 1.0, 1.5), "flip": True},
        {"mode": "sliding", "crop": (16, 16), "stride": (16, 16), "scales": (0.75, 1.0, 1.5), "flip": True,
         "fusion": "sum_exp", "whole_below_scale": 1.0, "align_corners": True},
    ],
    ids=["sliding", "sliding-scales-flip", "padded-and-windows", "whole-scales-flip", "official-cityscapes"],
)  # fmt: skip
def test_batched_windows_give_the_one_at_a_time_logits(settings):
    net = _CountingConvNet().eval()
    images = torch.randn(2, 3, 36, 44)
    with torch.no_grad():
        one_at_a_time = Evaluation(**settings)(net, images)
        forwards = net.forwards
        for window_batch_size in (3, 1000):
            net.forwards = net.images = 0
            batched = Evaluation(**settings, window_batch_size=window_batch_size)(net, images)
            torch.testing.assert_close(batched, one_at_a_time, rtol=1e-5, atol=1e-5)
            # every window still seen once, each with the batch's 2 images (and their mirrors: "sum_exp")
            assert net.images == 2 * (2 if settings.get("fusion") == "sum_exp" else 1) * forwards
            assert net.forwards < forwards
    if settings.get("mode") == "sliding" and len(settings.get("scales", (1.0,))) == 1:
        assert net.forwards == 1  # one size of window: all in one forward


def test_the_official_cityscapes_part_validates_a_run_end_to_end(in_tmp_dir):
    part = REPO / "conf" / "evaluation" / "official_cityscapes.yaml"
    window = ["--model.init_args.evaluation.crop=[16,16]", "--model.init_args.evaluation.stride=[16,16]"]
    cli = build_cli(["validate", *TINY_SYNTHETIC, f"--config={part}", *window])
    assert cli.model.evaluation.fusion == "sum_exp" and cli.model.evaluation.whole_below_scale == 1.0
    assert 0 <= cli.trainer.callback_metrics["val/mIoU"].item() <= 1


def test_window_batch_size_is_checked():
    with pytest.raises(ValueError, match="window_batch_size"):
        Evaluation(window_batch_size=0)


# ---- the official code's Cityscapes protocol (docs/method.md, differences from the official code) -------
class ConvNet(nn.Module):
    """A small deterministic convolutional network that takes any input size: windows, whole images and
    padding give different logits, so the protocol's placement of every network input matters."""

    def __init__(self, num_classes: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5, padding=2), nn.Tanh(), nn.Conv2d(8, num_classes, 3, padding=1)
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.body(x)


def official_cityscapes_tta(net, image: torch.Tensor, scales, crop, stride, flip: bool) -> torch.Tensor:
    """A plain restatement of the official code's Cityscapes test wrapper (models/TTA_wrapper_CTS.py with
    its base class, which appends scale 1.0), one image [1, 3, H, W], in float64 loops: the summed scores
    (not logits). Images are resized with OpenCV's INTER_LINEAR, scores back with align_corners=True."""
    import cv2
    import numpy as np

    scales = list(scales) + ([1.0] if 1.0 not in scales else [])
    height, width = image.shape[-2:]
    hwc = image[0].permute(1, 2, 0).numpy()

    def scores(window: torch.Tensor, mirror: bool) -> torch.Tensor:  # exp of the (flip-averaged) logits
        logits = net(window).double()
        if mirror:
            logits = (logits + net(window.flip(-1)).double().flip(-1)) / 2
        return logits.exp()

    final = torch.zeros(1, net(image[..., :1, :1]).shape[1], height, width, dtype=torch.float64)
    for scale in scales:
        long_side = int(max(height, width) * scale + 0.5)  # base size = the long side here
        if height > width:
            new_h, new_w = long_side, int(width * long_side / height + 0.5)
        else:
            new_w, new_h = long_side, int(height * long_side / width + 0.5)
        resized = cv2.resize(hwc, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        scaled = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None]
        if scale < 1.0:
            view = scores(scaled, mirror=True)  # the official code flips here whatever `flip` says
        else:
            rows = math.ceil((new_h - crop[0]) / stride[0]) + 1
            cols = math.ceil((new_w - crop[1]) / stride[1]) + 1
            view = torch.zeros(final.shape[:2] + (new_h, new_w), dtype=torch.float64)
            count = torch.zeros(1, 1, new_h, new_w, dtype=torch.float64)
            for r in range(rows):
                for c in range(cols):
                    h1, w1 = min(r * stride[0] + crop[0], new_h), min(c * stride[1] + crop[1], new_w)
                    h0, w0 = max(h1 - crop[0], 0), max(w1 - crop[1], 0)
                    view[..., h0:h1, w0:w1] += scores(scaled[..., h0:h1, w0:w1], mirror=flip)
                    count[..., h0:h1, w0:w1] += 1
            view = view / count
        final += nn.functional.interpolate(view, (height, width), mode="bilinear", align_corners=True)
    return final


OFFICIAL = dict(mode="sliding", fusion="sum_exp", whole_below_scale=1.0, align_corners=True, size_divisor=1)


@pytest.mark.parametrize(
    "size, crop, stride, window_batch_size",
    [((24, 40), (12, 20), (12, 20), 1), ((26, 37), (12, 16), (12, 16), 5), ((20, 32), (12, 16), (8, 10), 3)],
    ids=["windows-tile-the-image", "last-window-flush-overlaps", "overlapping-stride"],
)
def test_official_cityscapes_protocol_equals_the_official_wrapper_on_the_same_network(
    size, crop, stride, window_batch_size
):
    net = ConvNet().eval()
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    scales = (0.75, 1.25, 1.5, 1.75, 2.0)  # the official list; its wrapper adds 1.0
    evaluation = Evaluation(
        **OFFICIAL,
        crop=crop,
        stride=stride,
        scales=(*scales, 1.0),
        flip=True,
        window_batch_size=window_batch_size,
    )
    with torch.no_grad():
        ours = evaluation(net, image)
        official = official_cityscapes_tta(net, image, scales, crop, stride, flip=True)
    assert ours.shape == official.shape
    torch.testing.assert_close(ours.double(), official.log(), rtol=0, atol=2e-5)
    assert torch.equal(ours.argmax(1), official.argmax(1))
    # and it is another protocol than the default fusion: some pixel's class changes
    default = Evaluation(
        mode="sliding", crop=crop, stride=stride, scales=(*scales, 1.0), flip=True, size_divisor=1
    )
    with torch.no_grad():
        assert not torch.allclose(default(net, image), ours, atol=1e-3)


def test_scaled_sizes_are_the_official_ones_on_cityscapes_images():
    # the official code resizes the long side to int(2048 * scale + 0.5) and the short one in proportion;
    # msccl rounds each side of the image times the scale: the same on Cityscapes' 1024x2048 images
    for scale in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0):
        long_side = int(2048 * scale + 0.5)
        assert _scaled_size((1024, 2048), scale) == (int(1024 * long_side / 2048 + 0.5), long_side)


def test_official_cityscapes_protocol_stays_finite_where_float32_exp_overflows():
    net = ConvNet(scale=400.0).eval()  # logits of several hundred: float32 exp is inf
    image = torch.randn(1, 3, 20, 30, generator=torch.Generator().manual_seed(2))
    evaluation = Evaluation(**OFFICIAL, crop=(12, 16), stride=(12, 16), scales=(0.5, 1.0, 1.5), flip=True)
    with torch.no_grad():
        ours = evaluation(net, image)
        official = official_cityscapes_tta(net, image, (0.5, 1.5), (12, 16), (12, 16), flip=True)  # float64
    assert torch.isfinite(ours).all() and torch.isfinite(official).all()
    assert torch.isinf(net(image).exp()).any()  # the float32 official computation would overflow here
    assert torch.equal(ours.argmax(1), official.argmax(1))


def test_scales_below_whole_below_scale_infer_the_whole_image_and_the_others_slide():
    net = ConvNet().eval()
    image = torch.randn(1, 3, 32, 40, generator=torch.Generator().manual_seed(3))
    sliding = dict(mode="sliding", crop=(12, 16), stride=(12, 16), size_divisor=1)
    with torch.no_grad():
        for fusion in ("mean_logits", "sum_exp"):
            mixed = Evaluation(**sliding, scales=(0.5,), whole_below_scale=1.0, fusion=fusion)(net, image)
            whole = Evaluation(scales=(0.5,), size_divisor=1, fusion=fusion)(net, image)
            torch.testing.assert_close(mixed, whole)
            assert not torch.allclose(Evaluation(**sliding, scales=(0.5,), fusion=fusion)(net, image), whole)
            at_one = Evaluation(**sliding, whole_below_scale=1.0, fusion=fusion)(net, image)
            torch.testing.assert_close(at_one, Evaluation(**sliding, fusion=fusion)(net, image))


def test_evaluation_refuses_whole_below_scale_without_windows_and_an_unknown_fusion():
    with pytest.raises(ValueError, match="whole_below_scale needs mode=sliding"):
        Evaluation(whole_below_scale=1.0)
    with pytest.raises(ValueError, match="evaluation.fusion must be one of"):
        Evaluation(fusion="mean_exp")
