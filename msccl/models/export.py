"""A segmentation network written as ONNX or TorchScript, and checked against PyTorch (`msccl export`).

Only the network is exported (image in, logits at input size out): no projection heads (they live in the
training module), no auxiliary head (it only runs in training mode), no taps. The graph
zero-pads the image at the bottom and right to a multiple of the size divisor and crops the logits back,
as `msccl.training.evaluation.Evaluation` does in PyTorch, so any input size works. The exported file is
run on test inputs (onnxruntime / torch.jit.load), one of them not a multiple of the divisor, and must
match PyTorch's output. An ONNX file is self-contained unless its weights exceed what one protobuf file
holds; then they go to a `.data` file next to it, and the result says so.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msccl.models.base import SegmentationNet
from msccl.progress import progress

__all__ = [
    "ExportError",
    "ExportMismatch",
    "ExportResult",
    "LogitsOnly",
    "PadToDivisor",
    "export_net",
]

Format = Literal["onnx", "torchscript"]

ONNX_SINGLE_FILE_LIMIT = 1536 * 2**20
"""Weight bytes above which ONNX weights go to an external-data file: protobuf files stop at 2 GB, and
torch's exporter moves weights out above this size whatever it is asked."""


class ExportError(RuntimeError):
    """An export failed (torch could not export the network, or the file does not reproduce PyTorch);
    the message is one line naming the file, the exporter's own error is chained, no file is left."""


class ExportMismatch(ExportError):
    """The exported file does not reproduce PyTorch's logits."""


class LogitsOnly(nn.Module):
    """The inference path of a SegmentationNet as a plain tensor -> tensor module (what exporters want)."""

    def __init__(self, net: SegmentationNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image).logits


class PadToDivisor(nn.Module):
    """`infer` on the image zero-padded at the bottom and right to a multiple of `size_divisor`, its
    output cropped back to the input size: networks that need sizes divisible by their stride then take
    any size. Scriptable, so the padding stays dynamic in TorchScript around a traced network."""

    def __init__(self, infer: nn.Module, size_divisor: int) -> None:
        super().__init__()
        if size_divisor < 1:
            raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
        self.infer = infer
        self.size_divisor = size_divisor

    def forward(self, image: Tensor) -> Tensor:
        return self.infer(self.pad(image))[:, :, : image.shape[-2], : image.shape[-1]]

    def pad(self, image: Tensor) -> Tensor:
        """`image` zero-padded at the bottom and right to a multiple of `size_divisor`."""
        height, width = image.shape[-2], image.shape[-1]
        divisor = self.size_divisor
        return F.pad(
            image, [0, (divisor - width % divisor) % divisor, 0, (divisor - height % divisor) % divisor]
        )


@dataclass(frozen=True)
class ExportResult:
    """What `export_net` wrote and how closely it reproduces PyTorch."""

    path: Path
    external_data: Path | None
    """The ONNX weights file next to `path` when they exceed ONNX_SINGLE_FILE_LIMIT (keep both together)."""
    max_error: float
    """Largest |exported - PyTorch| over the test inputs."""

    def files(self) -> str:
        """The written files, in words."""
        if self.external_data is None:
            return f"{self.path} (one self-contained file)"
        return (
            f"{self.path} + its weights in {self.external_data} (over the single-file limit of "
            f"{ONNX_SINGLE_FILE_LIMIT / 2**30:.1f} GiB: keep both files together)"
        )


def export_net(
    net: SegmentationNet,
    output: str | Path,
    format: Format = "onnx",
    height: int = 512,
    width: int = 512,
    dynamic: bool = True,
    size_divisor: int = 32,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> ExportResult:
    """Export `net` in eval mode, inside `PadToDivisor`, to `output` and check it against PyTorch.

    With `dynamic`, batch, height and width are free and the file is also checked at a second size, not
    a multiple of `size_divisor`: a network whose graph bakes in the example size (e.g. the adaptive
    pooling of UPerNet's PPM in ONNX) fails there with `ExportMismatch`; export it with `dynamic=False`
    at the size you deploy.
    """
    if format not in ("onnx", "torchscript"):
        raise ValueError(f"format={format!r}: choose 'onnx' or 'torchscript'")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    model = PadToDivisor(LogitsOnly(net), size_divisor).eval()
    example = torch.randn(1, 3, height, width)
    external_data = None
    if format == "onnx" and _weight_bytes(net) > ONNX_SINGLE_FILE_LIMIT:
        external_data = output.with_name(f"{output.name}.data")  # the exporter's naming
    try:
        return _export_and_check(model, example, output, format, dynamic, external_data, rtol, atol)
    except Exception:
        for written in (output, external_data):  # a file that is not a faithful export is not left
            if written is not None:
                written.unlink(missing_ok=True)
        raise


def _export_and_check(
    model: PadToDivisor,
    example: Tensor,
    output: Path,
    format: Format,
    dynamic: bool,
    external_data: Path | None,
    rtol: float,
    atol: float,
) -> ExportResult:
    try:  # the exporters raise many kinds of errors, with pages of trace: one line, the error chained
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: the check decides
            if format == "onnx":
                _export_onnx(model, example, output, dynamic, external_data is not None)
            else:
                _export_torchscript(model, example, output)
    except Exception as error:
        height, width = example.shape[-2:]
        raise ExportError(
            f"{output}: torch could not export {type(model.infer.net).__name__} to {format} at the example "
            f"size {height}x{width}: {_gist(error)}"
        ) from error
    run = _onnx_runner(output) if format == "onnx" else _torchscript_runner(output)
    size_divisor, height, width = model.size_divisor, example.shape[-2], example.shape[-1]
    checks = [example]
    if dynamic:
        checks.append(torch.randn(2, 3, height + size_divisor // 2 + 3, width + size_divisor + 5))
    worst = 0.0
    for image in progress(checks, desc="checking the export", unit="input"):
        hint = (
            ": this network's graph only holds at the example size; export it with --static at the "
            "size you deploy (--height/--width)"
            if image is not example
            else ""
        )
        with torch.no_grad():
            expected = model(image).numpy()
        try:
            got = run(image)
        except Exception as error:
            raise ExportMismatch(
                f"{output}: the exported {format} file fails on input {tuple(image.shape)} "
                f"({_gist(error)}){hint}"
            ) from error
        same_shape = got.shape == expected.shape
        error = float(np.abs(got - expected).max()) if same_shape else float("inf")
        worst = max(worst, error)
        if not (same_shape and np.allclose(got, expected, rtol=rtol, atol=atol)):
            raise ExportMismatch(
                f"{output}: exported {format} output differs from PyTorch for input {tuple(image.shape)} "
                f"(max abs difference {error:.3g}, shapes {got.shape} vs {expected.shape}){hint}"
            )
    return ExportResult(output, external_data, worst)


def _gist(error: Exception) -> str:
    """One line of an exporter's or runtime's error: the first of torch.onnx's exception summary, or of
    the message (no colour codes, no exception class names)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split("## Exception summary")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return re.sub(r"^<class '[\w.]+'>: ", "", lines[0]) if lines else type(error).__name__


def _weight_bytes(net: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))


def _export_onnx(model: nn.Module, example: Tensor, output: Path, dynamic: bool, external_data: bool) -> None:
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
        external_data=external_data,
        verbose=False,
    )


def _export_torchscript(model: PadToDivisor, example: Tensor, output: Path) -> None:
    """Trace the network at the padded example size, script the padding around it (tracing would
    freeze the padding amounts of the example)."""
    traced = torch.jit.trace(model.infer, model.pad(example), check_trace=False)  # checked by export_net
    torch.jit.script(PadToDivisor(traced, model.size_divisor)).save(str(output))


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
