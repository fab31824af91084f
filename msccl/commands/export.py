"""`msccl export`: write a trained segmentation network as ONNX or TorchScript, and check it.

    msccl export --ckpt_path RUN/checkpoints/last.ckpt --format onnx --output model.onnx

The checkpoint's network goes to `msccl.models.export.export_net` (what is exported, how any input size
works, how the file is checked), padded to the checkpoint's evaluation size divisor unless
`--size_divisor` says otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from msccl.commands.flags import CommandParser
from msccl.models.export import ExportError, export_net

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """`msccl export --ckpt_path RUN/checkpoints/last.ckpt --format onnx --output model.onnx`."""
    parser = CommandParser(prog="msccl export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `msccl fit`")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--output", required=True, help="file to write (e.g. model.onnx, model.pt)")
    parser.add_argument("--height", type=int, default=512, help="height of the example input")
    parser.add_argument("--width", type=int, default=512, help="width of the example input")
    parser.add_argument("--static", action="store_true", help="fix batch 1 and the example height/width")
    parser.add_argument(
        "--size_divisor",
        type=int,
        default=None,
        help="the graph pads inputs to a multiple of this (default: the checkpoint's evaluation setting)",
    )
    args = parser.parse_args(argv)
    ckpt = Path(args.ckpt_path)
    if not ckpt.is_file():
        parser.error(f"--ckpt_path {ckpt}: no such file")
    if args.size_divisor is not None and args.size_divisor < 1:
        parser.error(f"--size_divisor must be >= 1, got {args.size_divisor}")
    # Lightning is imported only past the argument checks: `--help` and usage errors answer at once
    from msccl.training import SegmentationModule
    from msccl.training.checkpoint import CheckpointError, verify_checkpoint

    try:
        verify_checkpoint(ckpt)  # as every other loader does: a damaged or cut-short file is refused
    except CheckpointError as error:
        print(f"msccl export: error: {error}", file=sys.stderr)
        return 1
    module = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu")
    net = module.net
    size_divisor = args.size_divisor or module.evaluation.size_divisor
    try:
        result = export_net(
            net, args.output, args.format, args.height, args.width, not args.static, size_divisor
        )
    except ExportError as error:
        print(f"msccl export: error: {error}", file=sys.stderr)
        return 1
    axes = "fixed shape" if args.static else "dynamic batch/height/width"
    print(
        f"wrote {result.files()}: {type(net).__name__} -> {args.format} ({axes}, padded to a multiple of "
        f"{size_divisor}), logits match PyTorch (max abs difference {result.max_error:.2e})"
    )
    return 0
