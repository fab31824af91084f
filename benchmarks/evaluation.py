"""Images/s of the paper's Cityscapes test protocol, windows one at a time versus batched.

docs/method.md C2: sliding windows of 512x1024 over 1024x2048 images (stride two thirds of the crop), 6
scales (0.5 .. 1.75) and horizontal flip, logits averaged: up to 9 windows per scale (1 at 0.5x) x 6
scales x 2 flips network inputs per image. `msccl.training.evaluation.Evaluation` runs them
`window_batch_size` at a time; this script times `window_batch_size=1` (one at a time, the old path)
against larger values on the same images and network (HRNetV2-W48 by default, the paper's preset), and
checks that the logits agree.

    python benchmarks/evaluation.py                                   # GPU: the full protocol, HRNet paper
    .venv/bin/python benchmarks/evaluation.py --cpu-size              # CPU: 1/8 the size, HRNet small
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from models import at_size  # noqa: E402

from msccl import models  # noqa: E402
from msccl.training import SegmentationModule  # noqa: E402
from msccl.training.evaluation import Evaluation  # noqa: E402

SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
CLASSES = 19


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="HRNet", choices=models.available())
    parser.add_argument("--preset", default=None, help="network preset (default: paper on GPU, small on CPU)")
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 2048], help="image HEIGHT WIDTH")
    parser.add_argument("--crop", type=int, nargs=2, default=[512, 1024], help="window HEIGHT WIDTH")
    parser.add_argument(
        "--cpu-size", action="store_true", help="1/8 of the sizes (128x256 images, 64x128 windows)"
    )
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES), help="default: the paper's")
    parser.add_argument("--images", type=int, default=2, help="images per timed call (the batch)")
    parser.add_argument(
        "--window-batch-sizes", type=int, nargs="+", default=[4, 12, 36], help="timed against 1 (always run)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="infer under bf16 autocast")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu_size:
        args.size, args.crop = [v // 8 for v in args.size], [v // 8 for v in args.crop]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("paper" if device.type == "cuda" else "small")
    spec = models.get(args.architecture)
    torch.manual_seed(0)
    net = partial(spec, **at_size(spec.presets[preset], tuple(args.crop)))
    module = SegmentationModule(net, CLASSES).to(device).eval()
    images = torch.randn(args.images, 3, *args.size, device=device)

    def run(window_batch_size: int) -> torch.Tensor:
        evaluation = Evaluation(
            mode="sliding",
            crop=tuple(args.crop),
            scales=SCALES,
            flip=True,
            window_batch_size=window_batch_size,
        )
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16),
        ):
            return evaluation(module, images)

    rows, reference = [], None
    # one at a time first: the baseline of the speed-ups and the reference logits
    for window_batch_size in dict.fromkeys([1, *args.window_batch_sizes]):
        logits = run(window_batch_size)  # also the warm-up of this batch size
        reference = logits if reference is None else reference
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run(window_batch_size)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        difference = (logits - reference).abs().max().item()
        rows.append((window_batch_size, seconds, difference))
    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"\n{args.architecture} ({preset}), {args.images} images of {args.size[0]}x{args.size[1]}, windows "
        f"{args.crop[0]}x{args.crop[1]}, scales {args.scales}, flip, {'bf16' if args.bf16 else 'float32'}, "
        f"torch {torch.__version__}, {where}; median of {args.repeats} after a warm-up; max |logit "
        "difference| against window_batch_size 1."
    )
    print("\n| window_batch_size | s per call | images/s | speed-up | max abs logit diff |")
    print("|---:|---:|---:|---:|---:|")
    base = rows[0][1]
    for window_batch_size, seconds, difference in rows:
        print(
            f"| {window_batch_size} | {seconds:.3f} | {args.images / seconds:.2f} | {base / seconds:.2f}x "
            f"| {difference:.1e} |"
        )


if __name__ == "__main__":
    main()
