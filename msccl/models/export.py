"""`msccl export`: write a trained segmentation network as ONNX or TorchScript, and check it.

Only the network is exported (image in, logits at input size out): no projection heads (they live in the
training module, docs/method.md A1), no auxiliary head (it only runs in training mode), no taps. The exported
file is run once on a test input (onnxruntime / torch.jit.load) and must match PyTorch's output.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from msccl.models.base import SegmentationNet
from msccl.progress import progress

__all__ = ["ExportMismatch", "LogitsOnly", "export_net", "main"]

Format = Literal["onnx", "torchscript"]


class ExportMismatch(RuntimeError):
    """The exported file does not reproduce PyTorch's logits."""


class LogitsOnly(nn.Module):
    """The inference path of a SegmentationNet as a plain tensor -> tensor module (what exporters want)."""

    def __init__(self, net: SegmentationNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image).logits


def export_net(
    net: SegmentationNet,
    output: str | Path,
    format: Format = "onnx",
    height: int = 512,
    width: int = 512,
    dynamic: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Export `net` in eval mode to `output` and return the largest |exported - PyTorch| on test inputs.

    With `dynamic`, batch, height and width are free and the file is also checked at a second size: a
    network whose graph bakes in the example size (e.g. the adaptive pooling of UPerNet's PPM in ONNX)
    fails there with `ExportMismatch`; export it with `dynamic=False` at the size you deploy.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = LogitsOnly(net).eval()
    example = torch.randn(1, 3, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: the check below decides
        if format == "onnx":
            _export_onnx(model, example, output, dynamic)
        elif format == "torchscript":
            torch.jit.trace(model, example, check_trace=False).save(str(output))  # checked below
        else:
            raise ValueError(f"format={format!r}: choose 'onnx' or 'torchscript'")
    run = _onnx_runner(output) if format == "onnx" else _torchscript_runner(output)
    checks = [example]
    if dynamic:
        checks.append(torch.randn(2, 3, height + 32, width + 64))
    worst = 0.0
    for image in progress(checks, desc="checking the export", unit="input"):
        with torch.no_grad():
            expected = model(image).numpy()
        got = run(image)
        same_shape = got.shape == expected.shape
        error = float(np.abs(got - expected).max()) if same_shape else float("inf")
        worst = max(worst, error)
        if not (same_shape and np.allclose(got, expected, rtol=rtol, atol=atol)):
            hint = " (export with --static at the size you deploy)" if image is not example else ""
            raise ExportMismatch(
                f"{output}: exported {format} output differs from PyTorch for input {tuple(image.shape)} "
                f"(max abs difference {error:.3g}, shapes {got.shape} vs {expected.shape}){hint}"
            )
    return worst


def _export_onnx(model: nn.Module, example: Tensor, output: Path, dynamic: bool) -> None:
    auto = torch.export.Dim.AUTO
    dynamic_shapes = {"image": {0: auto, 2: auto, 3: auto}} if dynamic else None
    torch.onnx.export(
        model,
        (example,),
        str(output),
        dynamo=True,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=dynamic_shapes,
        verbose=False,
    )


def _onnx_runner(path: Path):
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("checking an ONNX export needs onnxruntime: pip install -e '.[export]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image.numpy()})[0]


def _torchscript_runner(path: Path):
    loaded = torch.jit.load(str(path), map_location="cpu")

    def run(image: Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(image).numpy()

    return run


def main(argv: list[str]) -> int:
    """`msccl export --ckpt_path RUN/checkpoints/last.ckpt --format onnx --output model.onnx`."""
    parser = argparse.ArgumentParser(prog="msccl export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `msccl fit`")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--output", required=True, help="file to write (e.g. model.onnx, model.pt)")
    parser.add_argument("--height", type=int, default=512, help="height of the example input")
    parser.add_argument("--width", type=int, default=512, help="width of the example input")
    parser.add_argument("--static", action="store_true", help="fix batch 1 and the example height/width")
    args = parser.parse_args(argv)
    ckpt = Path(args.ckpt_path)
    if not ckpt.is_file():
        parser.error(f"--ckpt_path {ckpt}: no such file")
    from msccl.training import SegmentationModule  # Lightning is imported only when exporting a checkpoint

    module = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu")
    net = module.net
    error = export_net(net, args.output, args.format, args.height, args.width, dynamic=not args.static)
    axes = "fixed shape" if args.static else "dynamic batch/height/width"
    print(
        f"wrote {args.output}: {type(net).__name__} -> {args.format} ({axes}), "
        f"logits match PyTorch (max abs difference {error:.2e})"
    )
    return 0
