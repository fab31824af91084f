"""The official code's network behaviours as settings (docs/method.md "Differences from the official code"):
HRNet/OCRNet `head`, `align_corners`, UPerNet's auxiliary stage, the weight-decay rule, the projector's
BatchNorm momentum. Each test checks the structure or the parameters an option selects, at tiny sizes."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from msccl import models
from msccl.cli import build_cli
from msccl.contrastive import MSCSContrastiveLoss, ProjectionHeads
from msccl.training import SegmentationModule
from msccl.training.optim import parameter_groups
from tests.conftest import REPO, SYNTHETIC_CONFIG
from tests.test_models import TINY_SWIN

SMALL_HRNET = "hrnet_w18_small"  # branches 16/32/64/128: 240 channels concatenated
WIDTH = 240


def _module_types(module: nn.Module) -> list[type]:
    return [type(m) for m in module.modules() if not list(m.children())]


def test_hrnet_heads_msccl_and_official():
    default = models.get("HRNet")(3, backbone=SMALL_HRNET).head
    assert _module_types(default) == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Conv2d]
    assert default[0][0].kernel_size == (1, 1)
    # the authors' models/HRNet.py: conv3x3 (bias)-BN-conv1x1 (no bias), no ReLU
    official = models.get("HRNet")(3, backbone=SMALL_HRNET, head="official").head
    assert _module_types(official) == [nn.Conv2d, nn.BatchNorm2d, nn.Conv2d]
    first, _, last = official
    assert (first.in_channels, first.out_channels, first.kernel_size) == (WIDTH, WIDTH, (3, 3))
    assert first.bias is not None and last.bias is None and last.out_channels == 3
    with pytest.raises(ValueError, match="head='mmseg'"):
        models.get("HRNet")(3, backbone=SMALL_HRNET, head="mmseg")


def test_ocrnet_heads_msccl_and_official():
    small = models.get("OCRNet").presets["small"]  # mid_channels 64
    default = models.get("OCRNet")(3, **small)
    conv = default.region_head[0][0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (WIDTH, WIDTH, (1, 1))
    assert default.ocr.fuse[1].p == 0.05
    # the authors' models/OCR.py: conv3x3(720 -> 512)-BN-ReLU-conv1x1, no dropout in the fusion
    official = models.get("OCRNet")(3, **small, head="official")
    conv = official.region_head[0][0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (WIDTH, 64, (3, 3))
    assert not any(isinstance(m, nn.Dropout2d) for m in official.region_head.modules())
    assert official.ocr.fuse[1].p == 0.0
    assert official.region_head[2].out_channels == 3


@pytest.mark.parametrize("name", ["HRNet", "OCRNet"])
def test_align_corners_reaches_every_upsampling(name, monkeypatch):
    cls = models.get(name)
    net = cls(3, **{**cls.presets["small"], "align_corners": True}).eval()
    seen: list[bool] = []
    interpolate = torch.nn.functional.interpolate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("align_corners"))
        return interpolate(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", spy)
    with torch.no_grad():
        logits = net(torch.randn(1, 3, 32, 32)).logits
    assert logits.shape == (1, 3, 32, 32)
    # the three branch upsamplings, then the logits to input size (timm's own fusion uses nearest: no flag)
    assert seen.count(True) >= 4 and False not in seen


def test_upernet_auxiliary_head_on_the_official_stride_32_stage():
    channels = 8 * TINY_SWIN["encoder_kwargs"]["embed_dim"]  # Swin's last stage: 768 for Swin-T
    official = models.get("UPerNet")(3, **TINY_SWIN, aux_stage=5)
    assert official.aux_head[0][0].in_channels == channels  # the default, stage 4, has half
    official.train()
    out = official(torch.randn(2, 3, 64, 64))
    assert out.aux_logits is not None and out.aux_logits.shape == (2, 3, 64, 64)


def test_weight_decay_rules_shape_and_official():
    torch.manual_seed(0)
    net = models.get("UPerNet")(3, **TINY_SWIN, aux_stage=5)
    names = {id(p): n for n, p in net.named_parameters()}

    def exempt(rule: str) -> set[str]:
        decay, no_decay = parameter_groups([net], decay_norms_and_biases=False, no_decay_rule=rule)
        assert len(decay["params"]) + len(no_decay["params"]) == len(names)
        assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
        return {names[id(p)] for p in no_decay["params"]}

    shape, official = exempt("shape"), exempt("official")
    position_tables = {n for n in names.values() if "relative_position_bias_table" in n}
    layer_norms = {
        f"{m}.{p}"
        for m, mod in net.named_modules()
        if isinstance(mod, nn.LayerNorm)
        for p in ("weight", "bias")
    }
    assert position_tables and layer_norms
    assert official == position_tables | layer_norms
    # the official rule decays BatchNorms and biases (and smp's `conv_norm_relu` convolutions) ...
    assert "aux_head.0.1.weight" not in official and "segmentation_head.0.bias" not in official
    assert not any("conv_norm_relu.0.weight" in n for n in official)
    # ... which msccl's shape rule exempts
    assert {"aux_head.0.1.weight", "segmentation_head.0.bias"} <= shape and official < shape
    with pytest.raises(ValueError, match="no_decay_rule='names'"):
        parameter_groups([net], decay_norms_and_biases=False, no_decay_rule="names")


def test_projector_batchnorm_momentum_is_a_setting():
    heads = ProjectionHeads([4, 8], dim=16, bn_momentum=0.0003)
    assert [head[2].momentum for head in heads] == [0.0003, 0.0003]
    assert ProjectionHeads([4])[0][2].momentum == 0.1
    net = models.get("HRNet")
    module = SegmentationModule(
        lambda n: net(n, backbone=SMALL_HRNET),
        num_classes=3,
        contrastive=MSCSContrastiveLoss,
        projection_bn_momentum=0.0003,
    )
    assert {head[2].momentum for head in module.projection_heads} == {0.0003}


def test_the_official_settings_are_config_keys(capsys):
    snippet = REPO / "conf" / "models" / "ocrnet_hrnet_w48.yaml"
    official = [
        "--model.init_args.net.init_args.head=official",
        "--model.init_args.net.init_args.align_corners=true",
        "--model.init_args.no_decay_rule=official",
        "--model.init_args.projection_bn_momentum=0.0003",
    ]
    with pytest.raises(SystemExit):
        build_cli(["fit", f"--config={SYNTHETIC_CONFIG}", f"--config={snippet}", *official, "--print_config"])
    model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert model["net"]["init_args"]["head"] == "official" and model["net"]["init_args"]["align_corners"]
    assert model["no_decay_rule"] == "official" and model["projection_bn_momentum"] == 0.0003
    with pytest.raises(SystemExit):  # a misspelt value fails before anything runs
        build_cli(
            ["fit", f"--config={SYNTHETIC_CONFIG}", "--model.init_args.no_decay_rule=names", "--print_config"]
        )
    assert "no_decay_rule" in capsys.readouterr().err
