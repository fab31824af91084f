"""`msccl export`: the network alone (no heads) as ONNX / TorchScript, reproducing PyTorch's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from msccl import models
from msccl.cli import build_cli, main
from msccl.models.base import SegmentationNet, Tap
from msccl.models.export import ExportMismatch, export_net
from msccl.training import SegmentationModule
from tests.conftest import TINY_SYNTHETIC

SMALL_HRNET = [
    "--model.init_args.net.class_path=msccl.models.HRNet",
    "--model.init_args.net.init_args.backbone=hrnet_w18_small",
]


def _small(name: str) -> SegmentationNet:
    torch.manual_seed(0)
    cls = models.get(name)
    return cls(3, **cls.presets["small"])


def test_deeplabv3_onnx_with_dynamic_batch_and_size_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    net = _small("DeepLabV3")
    path = tmp_path / "deeplab.onnx"
    error = export_net(net, path, "onnx", height=64, width=64)  # checked at 1x64x64 and 2x96x128
    assert path.is_file() and error < 1e-3
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    image = torch.randn(3, 3, 128, 64)  # a third batch size and shape
    with torch.no_grad():
        expected = net.eval()(image).logits.numpy()
    np.testing.assert_allclose(session.run(None, {"image": image.numpy()})[0], expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["DeepLabV3", "HRNet"])
def test_torchscript_round_trip_matches_pytorch_at_two_sizes(tmp_path, name):
    net = _small(name)
    path = tmp_path / f"{name}.pt"
    error = export_net(net, path, "torchscript", height=64, width=64)
    assert error < 1e-4
    loaded = torch.jit.load(str(path))
    image = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), net.eval()(image).logits, rtol=1e-4, atol=1e-5)


class _SizeBakingNet(SegmentationNet):
    """Uses the input width as a Python number: tracing freezes it, so other sizes go wrong."""

    def __init__(self) -> None:
        super().__init__(2)
        self.conv = nn.Conv2d(3, 2, 1)
        self.taps = (Tap(2, 1),)

    def forward_features(self, x):
        logits = self.conv(x) * float(x.shape[-1])
        return logits, None, [logits]


def test_export_that_only_works_at_the_example_size_fails_clearly(tmp_path):
    with pytest.raises(ExportMismatch, match="--static"):
        export_net(_SizeBakingNet(), tmp_path / "baked.pt", "torchscript", height=32, width=32)
    export_net(_SizeBakingNet(), tmp_path / "static.pt", "torchscript", height=32, width=32, dynamic=False)


def test_msccl_export_writes_hrnet_from_a_checkpoint_without_a_config(in_tmp_dir, capsys):
    pytest.importorskip("onnxruntime")
    overrides = [a for a in TINY_SYNTHETIC if ".net.init_args." not in a]  # drop FPN's widths
    build_cli(["fit", *overrides, *SMALL_HRNET])
    (ckpt,) = in_tmp_dir.glob("runs/synthetic/version_*/checkpoints/last.ckpt")
    output = in_tmp_dir / "export" / "hrnet.onnx"
    args = [
        "export",
        f"--ckpt_path={ckpt}",
        "--format=onnx",
        f"--output={output}",
        "--height=64",
        "--width=64",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--static"])
    assert exit_info.value.code == 0
    assert "HRNet -> onnx" in capsys.readouterr().out
    import onnxruntime

    net = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu").net.eval()
    assert isinstance(net, models.HRNet)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = net(image).logits.numpy()
    got = onnxruntime.InferenceSession(str(output)).run(None, {"image": image.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_msccl_export_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", f"--ckpt_path={tmp_path / 'nope.ckpt'}", f"--output={tmp_path / 'x.onnx'}"])
    assert exit_info.value.code == 2
    assert "nope.ckpt: no such file" in capsys.readouterr().err
