"""Size and cost of every architecture of the model zoo, at the paper's sizes and at a small size.

For each architecture (its `presets`: "paper" where the paper trains one, "small" for every one) it prints
parameters, GFLOPs of one 512x1024 forward pass, CPU forward time per image (small sizes by default:
1 image, eval mode, median of `--repeats` after a warm-up; wall-clock and process CPU seconds) and the
taps (channels @ strides).

GFLOPs are counted by torch.utils.flop_counter.FlopCounterMode on the meta device (no memory, no compute):
convolutions and matrix products only, 2 FLOPs per multiply-add (papers that quote "FLOPs" for HRNet or
Swin usually count multiply-adds, i.e. half these numbers).

With a GPU (`torch.cuda.is_available()`), it also measures training images/s (forward + backward + SGD
step, batch `--gpu-batch` at 512x512, bf16 autocast) with cross-entropy (+aux) alone and with the
multi-scale cross-scale contrastive loss on the taps (when `msccl.contrastive` is installed).

    .venv/bin/python benchmarks/models.py                 # ~3-6 min on 2 CPU cores
    .venv/bin/python benchmarks/models.py --time-paper    # also time the paper sizes on the CPU (slow)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msccl import models  # noqa: E402
from msccl.models import SegmentationNet  # noqa: E402

NUM_CLASSES = 19
FLOP_SIZE = (512, 1024)


def configurations() -> list[tuple[str, str, dict]]:
    """(architecture, preset, constructor arguments): paper sizes first, then every small size."""
    rows = []
    for preset in ("paper", "small"):
        for name in models.available():
            kwargs = models.get(name).presets.get(preset)
            if kwargs is not None:
                rows.append((name, preset, kwargs))
    return rows


def at_size(kwargs: dict, size: tuple[int, int]) -> dict:
    """Swin fixes its patch grid at construction: give it the measured input size."""
    encoder_kwargs = kwargs.get("encoder_kwargs")
    if encoder_kwargs and "img_size" in encoder_kwargs:
        return {**kwargs, "encoder_kwargs": {**encoder_kwargs, "img_size": size}}
    return kwargs


def describe(net: SegmentationNet) -> str:
    channels = "/".join(str(t.channels) for t in net.taps)
    strides = "/".join(str(t.stride) for t in net.taps)
    return f"{channels} @ {strides}"


def gflops(name: str, kwargs: dict) -> tuple[float, float, str]:
    """(parameters in millions, GFLOPs of one 512x1024 image, taps) without allocating any weight."""
    cls, kwargs = models.get(name), at_size(kwargs, FLOP_SIZE)
    try:
        with torch.device("meta"):
            net = cls(NUM_CLASSES, **kwargs)
    except RuntimeError:  # some encoders (smp's MiT) read tensor values while building
        net = cls(NUM_CLASSES, **kwargs).to("meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.eval()(torch.empty(1, 3, *FLOP_SIZE, device="meta"))
    params = sum(p.numel() for p in net.parameters()) / 1e6
    return params, counter.get_total_flops() / 1e9, describe(net)


def cpu_seconds(name: str, kwargs: dict, size: tuple[int, int], repeats: int) -> tuple[float, float]:
    """Median (wall-clock, process CPU) seconds of one eval forward of one image, after a warm-up.

    The process CPU time (all threads) is what the forward costs; on a machine shared with other jobs
    the wall-clock time also counts waiting for a core.
    """
    torch.manual_seed(0)
    net = models.get(name)(NUM_CLASSES, **at_size(kwargs, size)).eval()
    image = torch.randn(1, 3, *size)
    wall, cpu = [], []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            net(image)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall[1:]), statistics.median(cpu[1:])


def train_images_per_second(
    name: str,
    kwargs: dict,
    batch: int,
    contrastive: bool,
    device: str = "cuda",
    size: int = 512,
    steps: int = 10,
) -> float:
    """Training throughput: forward + backward + SGD step under bf16 autocast on size x size crops."""
    net = models.get(name)(NUM_CLASSES, **at_size(kwargs, (size, size))).to(device).train()
    params = list(net.parameters())
    if contrastive:
        from msccl.contrastive import MSCSContrastiveLoss, ProjectionHeads

        heads = ProjectionHeads([t.channels for t in net.taps]).to(device)
        contrastive_loss = MSCSContrastiveLoss(NUM_CLASSES)
        params += list(heads.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch, size, size), device=device)

    def step() -> None:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            out = net(images, return_taps=contrastive)
            loss = F.cross_entropy(out.logits.float(), labels, ignore_index=255)
            if out.aux_logits is not None:
                loss = loss + 0.4 * F.cross_entropy(out.aux_logits.float(), labels, ignore_index=255)
            if contrastive:
                loss = loss + 0.1 * contrastive_loss(heads(out.taps), labels)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def synchronize() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-paper", action="store_true", help="also time the paper sizes on the CPU")
    parser.add_argument("--gpu-batch", type=int, default=8)
    args = parser.parse_args(argv)
    size = tuple(args.time_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(
        "| architecture | preset | arguments | params (M) | GFLOPs 512x1024 "
        f"| s/image {size[0]}x{size[1]}: wall (CPU) | taps: channels @ strides |"
    )
    print("|" + "---|" * 7)
    rows = configurations()
    for name, preset, kwargs in rows:
        params, flops, taps = gflops(name, kwargs)
        timed = preset == "small" or args.time_paper
        seconds = "{:.2f} ({:.2f})".format(*cpu_seconds(name, kwargs, size, args.repeats)) if timed else "-"
        shown = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "encoder_kwargs") or "defaults"
        print(
            f"| {name} | {preset} | {shown} | {params:.1f} | {flops:.0f} | {seconds} | {taps} |", flush=True
        )
    if not torch.cuda.is_available():
        print("\nno GPU: training images/s not measured")
        return
    gpu = torch.cuda.get_device_name()
    print(f"\nGPU {gpu}: training images/s, batch {args.gpu_batch}, 512x512, bf16 autocast")
    print("| architecture | preset | CE (+aux) | CE (+aux) + contrastive |")
    print("|---|---|---|---|")
    for name, preset, kwargs in rows:
        plain = train_images_per_second(name, kwargs, args.gpu_batch, contrastive=False)
        try:
            with_contrastive = (
                f"{train_images_per_second(name, kwargs, args.gpu_batch, contrastive=True):.1f}"
            )
        except ImportError:
            with_contrastive = "msccl.contrastive not installed"
        print(f"| {name} | {preset} | {plain:.1f} | {with_contrastive} |", flush=True)


if __name__ == "__main__":
    main()
