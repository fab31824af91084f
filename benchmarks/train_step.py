"""Training-step time and peak memory with and without the contrastive loss, per architecture, and inference
time with and without it (equal by design: the projection heads never run at inference, docs/method.md A1).

For every architecture of the model zoo (the "small" presets; `--paper` for the paper's networks), a
`SegmentationModule` is built from the same seed twice: cross-entropy (+ auxiliary CE) only, and with
`MSCSContrastiveLoss` at the paper's defaults (weight 0.1, 256-d heads). A training step is what
`training_step` does without logging: forward with taps, every loss term (`compute_losses`), backward,
SGD step; on a batch of synthetic images and labels (`msccl.data.SyntheticSegmentation`, so the sampler
sees real class layouts and ignore regions). Inference is `module(images)` in eval mode.

- time: median over `--repeats` steps after a warm-up step (wall-clock; on a shared CPU also the
  process CPU time, which contention distorts less);
- peak memory: CPU: peak resident set size during one step after the warm-up (VmHWM, reset through
  /proc/self/clear_refs) minus the size before it; GPU: peak allocated CUDA memory minus that before it;
- every (architecture, variant) runs in a fresh process, so peaks do not mix.

With a GPU (`torch.cuda.is_available()`) it measures there, and also reports training and inference
images/s under bf16 and fp16 autocast (fp16 with a gradient scaler).

    .venv/bin/python benchmarks/train_step.py                          # small presets, CPU: ~5 min on 2 cores
    .venv/bin/python benchmarks/train_step.py --paper --size 512 --batch 8    # the paper's networks (GPU)
    .venv/bin/python benchmarks/train_step.py --architectures HRNet OCRNet --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msccl import models  # noqa: E402

NUM_CLASSES = 8  # the synthetic dataset's
VARIANTS = ("CE", "CE + contrastive")


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mib(run: Callable[[], object], device: torch.device) -> float:
    """What one call of `run` adds at its peak over the memory in use before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS restarts from the current RSS
    before = _kib("VmRSS")
    run()
    return (_kib("VmHWM") - before) / 1024


def timed(run: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """Median (wall-clock, process CPU) seconds of `run` over `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def measure(
    name: str, preset: str, contrastive: bool, size: tuple[int, int], batch: int, repeats: int
) -> dict:
    """One (architecture, variant) in this process: float32 step and inference, and on a GPU also
    bf16/fp16 images/s."""
    from msccl.contrastive import MSCSContrastiveLoss
    from msccl.data.synthetic import SyntheticSegmentation
    from msccl.data.transforms import eval_transform
    from msccl.training import SegmentationModule

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from models import at_size  # Swin's patch grid follows the input size

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)  # the same network weights for both variants: the heads are built after it
    net = partial(models.get(name), **at_size(models.get(name).presets[preset], size))
    module = SegmentationModule(net, NUM_CLASSES, contrastive=MSCSContrastiveLoss if contrastive else None)
    module.to(device)
    dataset = SyntheticSegmentation(batch, size, NUM_CLASSES, seed=0, transform=eval_transform())
    samples = [dataset[i] for i in range(batch)]
    images = torch.stack([s["image"] for s in samples]).to(device)
    labels = torch.stack([s["label"] for s in samples]).to(device)
    parameters = [p for m in module.trainable_modules() for p in m.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9)

    def train_step(dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            output = module.net(images, return_taps=contrastive)
            loss = module.compute_losses(output, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    def inference(dtype: torch.dtype | None = None) -> None:
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            module(images)

    warm_up = 3 if device.type == "cuda" else 1  # CUDA: kernel selection, allocator, autocast casts
    module.train()
    for _ in range(warm_up):  # optimiser state, allocator, kernels
        train_step()
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    result["train_peak_mib"] = peak_memory_mib(train_step, device)
    result["train_wall_s"], result["train_cpu_s"] = timed(train_step, repeats, device)
    module.eval()
    for _ in range(warm_up):
        inference()
    result["infer_peak_mib"] = peak_memory_mib(inference, device)
    result["infer_wall_s"], result["infer_cpu_s"] = timed(inference, repeats, device)
    if device.type == "cuda":
        for label, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
            module.train()
            for _ in range(warm_up):
                train_step(dtype, scaler)
            wall, _ = timed(partial(train_step, dtype, scaler), repeats, device)
            result[f"train_{label}_images_per_s"] = batch / wall
            module.eval()
            for _ in range(warm_up):
                inference(dtype)
            wall, _ = timed(partial(inference, dtype), repeats, device)
            result[f"infer_{label}_images_per_s"] = batch / wall
    return result


def run_in_fresh_process(name: str, preset: str, variant: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        preset,
        variant,
        "--size",
        *map(str, args.size),
        f"--batch={args.batch}",
        f"--repeats={args.repeats}",
    ]
    if args.threads:
        command.append(f"--threads={args.threads}")
    # a fixed mmap threshold: freed tensors go back to the system, so the resident size after the warm-up
    # step is what is alive, and the next step's peak is what that step needs (glibc otherwise raises the
    # threshold after the first large free and keeps later tensors' memory resident once freed)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{name} {preset} {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio(results: dict, key: str) -> str:
    return f"{results[VARIANTS[1]][key] / results[VARIANTS[0]][key]:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=models.available(), choices=models.available())
    parser.add_argument(
        "--paper", action="store_true", help="the paper's networks instead of the small presets"
    )
    parser.add_argument(
        "--size", type=int, nargs="+", default=[256], help="input HEIGHT [WIDTH] (default 256)"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--child", nargs=3, metavar=("ARCHITECTURE", "PRESET", "VARIANT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if len(args.size) > 2:
        parser.error("--size takes HEIGHT [WIDTH]")
    args.size = (args.size[0], args.size[-1])
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        name, preset, variant = args.child
        result = measure(name, preset, variant == VARIANTS[1], args.size, args.batch, args.repeats)
        print(json.dumps(result))
        return

    preset = "paper" if args.paper else "small"
    names = [n for n in args.architectures if preset in models.get(n).presets]
    load = os.getloadavg()[0]
    rows, gpu_rows, device = [], [], "cpu"
    for name in names:
        results = {variant: run_in_fresh_process(name, preset, variant, args) for variant in VARIANTS}
        ce, full = results[VARIANTS[0]], results[VARIANTS[1]]
        device = ce["device"]
        print(
            f"  done: {name} ({full['train_wall_s']:.3f} s per step with the contrastive loss)",
            file=sys.stderr,
        )
        cells = [
            f"{ce['train_wall_s']:.3f}",
            f"{full['train_wall_s']:.3f}",
            f"**{ratio(results, 'train_wall_s')}**",
            ratio(results, "train_cpu_s"),
            f"{ce['train_peak_mib']:.0f}",
            f"{full['train_peak_mib']:.0f}",
            f"**{ratio(results, 'train_peak_mib')}**",
            f"{ce['infer_wall_s']:.3f}",
            f"{full['infer_wall_s']:.3f}",
            ratio(results, "infer_wall_s"),
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        if "train_bf16_images_per_s" in ce:
            gpu_rows.append(
                f"| {name} | "
                + " | ".join(
                    f"{results[v][f'{kind}_{dtype}_images_per_s']:.1f}"
                    for kind in ("train", "infer")
                    for dtype in ("bf16", "fp16")
                    for v in VARIANTS
                )
                + " |"
            )
    threads = args.threads or torch.get_num_threads()
    where = (
        device
        if device != "cpu"
        else f"CPU, {threads} threads, load average {load:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(
        f"\n{preset} presets, batch {args.batch} of {args.size[0]}x{args.size[1]} synthetic images "
        f"({NUM_CLASSES} classes), float32, torch {torch.__version__}, {where}; median of {args.repeats} "
        "after a warm-up; ratios = with / without the contrastive loss (CPU ratio: process CPU time)."
    )
    print(
        "\n| architecture | train step CE (s) | + contrastive (s) | time ratio | CPU-time ratio "
        "| peak mem CE (MiB) | + contrastive (MiB) | memory ratio | inference CE (s) | + contrastive (s) "
        "| inference ratio |"
    )
    print("|---|" + "---:|" * 10)
    print("\n".join(rows))
    if gpu_rows:
        print("\nimages/s (CE / CE + contrastive) under autocast:")
        print(
            "| architecture | train bf16 CE | train bf16 +C | train fp16 CE | train fp16 +C "
            "| infer bf16 CE | infer bf16 +C | infer fp16 CE | infer fp16 +C |"
        )
        print("|---|" + "---:|" * 8)
        print("\n".join(gpu_rows))


if __name__ == "__main__":
    main()
