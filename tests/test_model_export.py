"""`msccl export`: the network alone (no heads) as ONNX / TorchScript, reproducing PyTorch's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from msccl import models
from msccl.cli import build_cli, main
from msccl.models import export
from msccl.models.base import SegmentationNet, Tap
from msccl.models.export import ExportError, ExportMismatch, export_net
from msccl.training import SegmentationModule
from msccl.training.evaluation import Evaluation
from tests.conftest import TINY_SYNTHETIC

SMALL_HRNET = [
    "--model.init_args.net.class_path=msccl.models.HRNet",
    "--model.init_args.net.init_args.backbone=hrnet_w18_small",
]


def _small(name: str) -> SegmentationNet:
    torch.manual_seed(0)
    cls = models.get(name)
    return cls(3, **cls.presets["small"])


def _pytorch_logits(net: SegmentationNet, image: torch.Tensor) -> np.ndarray:
    """What `msccl predict` / `validate` compute in PyTorch (padded to a multiple of 32, cropped back)."""
    with torch.no_grad():
        return Evaluation()(lambda x: net.eval()(x).logits, image).numpy()


def test_deeplabv3_onnx_is_one_file_and_matches_pytorch_at_any_batch_and_size(tmp_path):
    pytest.importorskip("onnxruntime")
    net = _small("DeepLabV3")
    path = tmp_path / "deeplab.onnx"
    result = export_net(net, path, "onnx", height=64, width=64)  # checked at 1x64x64 and 2x83x101
    assert result.max_error < 1e-3 and result.external_data is None
    assert [p.name for p in tmp_path.iterdir()] == ["deeplab.onnx"]  # self-contained: no .onnx.data
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    image = torch.randn(3, 3, 50, 70)  # a third batch size, not a multiple of 32
    got = session.run(None, {"image": image.numpy()})[0]
    np.testing.assert_allclose(got, _pytorch_logits(net, image), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["DeepLabV3", "HRNet"])
def test_torchscript_round_trip_matches_pytorch_at_sizes_off_the_divisor(tmp_path, name):
    net = _small(name)  # HRNet fails at 50x70 unless padded to a multiple of 32
    path = tmp_path / f"{name}.pt"
    result = export_net(net, path, "torchscript", height=64, width=64)
    assert result.max_error < 1e-4
    loaded = torch.jit.load(str(path))
    image = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        got = loaded(image).numpy()
    np.testing.assert_allclose(got, _pytorch_logits(net, image), rtol=1e-4, atol=1e-5)


class _TinyNet(SegmentationNet):
    def __init__(self) -> None:
        super().__init__(2)
        self.conv = nn.Conv2d(3, 2, 1)
        self.taps = (Tap(2, 1),)

    def forward_features(self, x):
        logits = self.conv(x)
        return logits, None, [logits]


def test_onnx_weights_over_the_single_file_limit_go_to_a_named_data_file(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(export, "ONNX_SINGLE_FILE_LIMIT", 0)  # as if the weights exceeded protobuf's 2 GB
    result = export_net(_TinyNet(), tmp_path / "tiny.onnx", "onnx", height=8, width=8, dynamic=False)
    assert result.external_data == tmp_path / "tiny.onnx.data" and result.external_data.is_file()
    assert f"its weights in {result.external_data}" in result.files()


class _SizeBakingNet(SegmentationNet):
    """Uses the input width as a Python number: tracing freezes it, so other sizes go wrong."""

    def __init__(self) -> None:
        super().__init__(2)
        self.conv = nn.Conv2d(3, 2, 1)
        self.taps = (Tap(2, 1),)

    def forward_features(self, x):
        logits = self.conv(x) * float(x.shape[-1])
        return logits, None, [logits]


class _UnexportableNet(_TinyNet):
    def forward_features(self, x):
        logits = torch.special.bessel_j0(self.conv(x))  # no ONNX translation
        return logits, None, [logits]


def test_a_network_torch_cannot_export_is_one_line_naming_the_file_and_the_operator(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ExportError, match=r"bad\.onnx: torch could not export _UnexportableNet") as error:
        export_net(_UnexportableNet(), tmp_path / "bad.onnx", "onnx", height=8, width=8, dynamic=False)
    assert "bessel_j0" in str(error.value) and len(str(error.value).splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_export_that_only_works_at_the_example_size_fails_clearly(tmp_path):
    with pytest.raises(ExportMismatch, match="--static"):
        export_net(_SizeBakingNet(), tmp_path / "baked.pt", "torchscript", height=32, width=32)
    assert not (tmp_path / "baked.pt").exists()  # a file that does not reproduce PyTorch is not left
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
    assert f"wrote {output} (one self-contained file): HRNet -> onnx" in capsys.readouterr().out
    assert [p.name for p in output.parent.iterdir()] == ["hrnet.onnx"]
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
