"""The model zoo: every registered architecture honours the interface (tests for free for a new one)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import yaml

from msccl import models
from msccl.cli import build_cli
from msccl.contrastive import MSCSContrastiveLoss
from msccl.models import SegmentationNet
from msccl.training import SegmentationModule
from tests.conftest import REPO, SYNTHETIC_CONFIG

NUM_CLASSES = 3
SIZE = 64
# Architectures whose training forward returns auxiliary logits (docs/method.md A4: OCRNet, UPerNet).
WITH_AUX = {"OCRNet", "UPerNet"}
# Tiny Swin (same code path as Swin-T: NHWC features, fixed patch grid) for UPerNet tests.
TINY_SWIN = {
    "encoder": "tu-swin_tiny_patch4_window7_224",
    "decoder_channels": 32,
    "aux_channels": 16,
    "encoder_kwargs": {"img_size": SIZE, "embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
}


def small(name: str, **overrides) -> SegmentationNet:
    torch.manual_seed(0)
    cls = models.get(name)
    return cls(NUM_CLASSES, **{**cls.presets["small"], **overrides})


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def labels(batch: int = 2) -> torch.Tensor:
    """Three horizontal class bands plus an ignored corner, so every scale sees several classes."""
    label = (
        torch.arange(SIZE).div(SIZE / NUM_CLASSES, rounding_mode="floor").long()[:, None].expand(SIZE, SIZE)
    )
    label = label.clone()
    label[:8, :8] = 255
    return label.expand(batch, SIZE, SIZE).clone()


def assert_taps_match(net: SegmentationNet, taps: list[torch.Tensor], batch: int = 2) -> None:
    assert len(taps) == len(net.taps) > 0
    for tap, feature in zip(net.taps, taps, strict=True):
        assert feature.shape == (batch, tap.channels, SIZE // tap.stride, SIZE // tap.stride)
    strides = [tap.stride for tap in net.taps]
    assert strides == sorted(strides), "taps must come highest resolution first"


# ---- the interface, for every registered architecture -------------------------------------------------
@pytest.mark.parametrize("name", models.available())
def test_every_architecture_returns_logits_taps_and_aux_as_announced(name):
    net = small(name).train()
    out = net(images(), return_taps=True)
    assert out.logits.shape == (2, NUM_CLASSES, SIZE, SIZE)
    assert_taps_match(net, out.taps)
    if name in WITH_AUX:
        assert out.aux_logits is not None and out.aux_logits.shape == out.logits.shape
    else:
        assert out.aux_logits is None
    net.eval()
    with torch.no_grad():
        inference = net(images())
    assert inference.logits.shape == (2, NUM_CLASSES, SIZE, SIZE)
    assert inference.taps == [] and inference.aux_logits is None  # eval: logits only


@pytest.mark.parametrize("name", models.available())
def test_gradients_of_every_tap_reach_the_encoder_stem(name):
    """A tap recorded under no_grad or detached would leave the encoder without gradient."""
    net = small(name).train()
    named = dict(net.named_parameters())
    stem_name = next(n for n, p in named.items() if p.ndim == 4)  # first conv: the encoder stem
    taps = net(images(), return_taps=True).taps
    for index, feature in enumerate(taps):
        grads = torch.autograd.grad(
            feature.square().mean(), list(named.values()), retain_graph=True, allow_unused=True
        )
        reached = {
            n for (n, _), g in zip(named.items(), grads, strict=True) if g is not None and g.abs().sum() > 0
        }
        assert stem_name in reached, f"tap {index} of {name} does not reach {stem_name}"


@pytest.mark.parametrize("name", models.available())
def test_one_training_step_with_cross_entropy_aux_and_a_contrastive_term_on_the_taps(name):
    """A real SegmentationModule step: CE (+ aux) + 0.25 x MSCSContrastiveLoss on projected taps."""
    module = SegmentationModule(
        lambda num_classes: small(name),
        NUM_CLASSES,
        contrastive=lambda n, ignore: MSCSContrastiveLoss(n, ignore, min_views_per_class=2),
        contrastive_weight=0.25,
        projection_dim=16,
    ).train()
    params = list(module.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01)
    before = [p.detach().clone() for p in params]
    label = labels()
    losses = module.compute_losses(module.net(images(), return_taps=True), label)
    assert ("aux_ce" in losses) == (name in WITH_AUX)
    assert losses["contrastive"] > 0 and torch.isfinite(losses["loss"])
    aux = module.aux_weight * losses["aux_ce"] if "aux_ce" in losses else 0.0
    assert torch.isclose(losses["loss"], losses["ce"] + aux + 0.25 * losses["contrastive"])
    losses["loss"].backward()
    optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, params, strict=True)]
    assert sum(changed) > 0.9 * len(params), f"{sum(changed)}/{len(params)} parameters changed"
    changed_by_id = {id(p): c for p, c in zip(params, changed, strict=True)}
    for scale, head in enumerate(module.projection_heads):
        if losses[f"contrastive/ms/s{scale}"] > 0:  # a one-class scale has no negatives: term and grad 0
            assert all(changed_by_id[id(p)] for p in head.parameters()), f"head {scale} was not trained"
    assert losses["contrastive/ms/s0"] > 0


# ---- taps of the paper's configurations (docs/method.md A1), announced at construction ---------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("HRNet", {"backbone": "hrnet_w48"}, [(48, 4), (96, 8), (192, 16), (384, 32)]),
        ("OCRNet", {"backbone": "hrnet_w48"}, [(48, 4), (96, 8), (192, 16), (384, 32)]),
        ("OCRNet", {"backbone": "resnet101"}, [(256, 4), (2048, 8)]),
        ("DeepLabV3", {"encoder": "resnet101"}, [(256, 4), (1024, 8), (2048, 8)]),
        ("DeepLabV3", {"encoder": "resnet50", "tap_stages": [2, 5]}, [(256, 4), (2048, 8)]),
        ("UPerNet", models.UPerNet.presets["paper"], [(512, 4), (512, 8), (512, 16), (512, 32)]),
        (
            "UPerNet",
            {**models.UPerNet.presets["paper"], "tap_position": "backbone"},
            [(96, 4), (192, 8), (384, 16), (768, 32)],
        ),
        (
            "UPerNet",
            {"encoder": "resnet50", "tap_position": "backbone"},
            [(256, 4), (512, 8), (1024, 16), (2048, 32)],
        ),
    ],
)
def test_paper_configurations_announce_the_method_taps(name, kwargs, expected):
    with torch.device("meta"):  # no weights allocated: announcing taps must not need a forward
        net = models.get(name)(19, **kwargs)
    assert [(t.channels, t.stride) for t in net.taps] == expected


def test_hrnet_taps_are_branch_outputs_not_timm_incre_features():
    """docs/pitfalls.md: timm's features_only gives the incre-module widths unless feature_location=''."""
    net = small("HRNet")  # hrnet_w18_small: branches 16/32/64/128
    assert [t.channels for t in net.taps] == [16, 32, 64, 128]
    assert not hasattr(net.backbone.body, "incre_modules") or net.backbone.body.incre_modules is None


@pytest.mark.parametrize("position", ["fpn", "backbone"])
def test_upernet_over_swin_gives_nchw_taps_and_aux(position):
    net = models.UPerNet(NUM_CLASSES, tap_position=position, **TINY_SWIN).train()
    out = net(images(), return_taps=True)
    assert_taps_match(net, out.taps)
    assert out.aux_logits.shape == out.logits.shape == (2, NUM_CLASSES, SIZE, SIZE)
    expected = [32] * 4 if position == "fpn" else [24, 48, 96, 192]
    assert [t.channels for t in net.taps] == expected


def test_hooked_taps_survive_deepcopy_and_pickle():
    """ddp_spawn pickles the module; deepcopy (EMA, SWA) must tap the copy's own decoder."""
    net = small("UPerNet").eval()
    with torch.no_grad():
        reference = net(images(), return_taps=True).taps
        for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
            taps = clone(images(), return_taps=True).taps
            assert all(torch.allclose(a, b) for a, b in zip(reference, taps, strict=True))
    assert net.fpn_taps.outputs == {}  # the copies did not write into the original's store


@pytest.mark.parametrize(
    ("name", "kwargs", "setting"),
    [
        ("DeepLabV3", {"tap_stages": [5, 2]}, "tap_stages"),
        ("DeepLabV3", {"tap_stages": [6]}, "tap_stages"),
        ("HRNet", {"tap_stages": [1, 2]}, "tap_stages"),
        ("UPerNet", {"tap_position": "head"}, "tap_position"),
        ("UPerNet", {"tap_stages": [1, 2]}, "tap_stages"),
        ("UPerNet", {"aux_stage": 7}, "aux_stage"),
        ("FPN", {"encoder_kwargs": {"img_size": 64}}, "encoder_kwargs"),
    ],
)
def test_bad_settings_fail_naming_the_setting(name, kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        small(name, **kwargs)


@pytest.mark.parametrize("name", ["DeepLabV3", "DeepLabV3Plus"])
def test_deeplab_training_with_one_image_explains_the_pooling_batchnorm(name):
    """docs/pitfalls.md: the ASPP image-pooling branch fails with batch 1 per device in training mode."""
    net = small(name).train()
    with pytest.raises(ValueError, match="at least 2 images"):
        net(images(batch=1))
    assert net.eval()(images(batch=1)).logits.shape == (1, NUM_CLASSES, SIZE, SIZE)


# ---- configs --------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*non-meta parameter")  # pretrained: true loads into meta tensors
@pytest.mark.parametrize("path", sorted((REPO / "conf" / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_model_config_snippets_build_the_network_they_name(path):
    net_config = yaml.safe_load(path.read_text())["model"]["init_args"]["net"]
    module, _, name = net_config["class_path"].rpartition(".")
    assert module == "msccl.models"
    with torch.device("meta"):
        net = models.get(name)(19, **net_config["init_args"])
    assert net.taps


def test_a_model_snippet_replaces_the_demo_network_and_takes_pretrained_true(in_tmp_dir, capsys):
    snippet = REPO / "conf" / "models" / "hrnet_w48.yaml"
    args = [
        f"--config={SYNTHETIC_CONFIG}",
        f"--config={snippet}",
        "--model.init_args.net.init_args.pretrained=true",
    ]
    with pytest.raises(SystemExit):
        build_cli(["fit", *args, "--print_config"])
    net = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["net"]
    assert net["class_path"] == "msccl.models.HRNet"
    assert net["init_args"]["pretrained"] is True and "pyramid_channels" not in net["init_args"]


def test_registry_lookup_is_case_insensitive_and_names_alternatives():
    assert models.get("fpn") is models.FPN
    assert models.get("hrnet") is models.HRNet
    with pytest.raises(KeyError, match="available"):
        models.get("nonexistent")
