"""Training-step time and peak memory with and without the contrastive loss, per architecture, and inference
time with and without it (equal by design: the projection heads never run at inference, docs/method.md A1).

For every architecture of the model zoo (the "small" presets; `--paper` for the paper's networks), a
`SegmentationModule` is built from the same seed twice: cross-entropy (+ auxiliary CE) only, and with
`MSCSContrastiveLoss` at the paper's defaults (weight 0.1, 256-d heads). A training step is what
`training_step` does without logging: forward with taps, every loss term (`compute_losses`), backward,
SGD step; on a batch of synthetic images and labels (`msccl.data.SyntheticSegmentation`, so the sampler
sees real class layouts and ignore regions). Inference is `module(images)` in eval mode.

- time: both variants live in one process (one fresh process per architecture) and their steps are
  interleaved, CE then CE + contrastive, so that load changes hit both alike; each pair gives a ratio,
  and pairs are added until there are at least `--repeats` and the ratio's interquartile range is below
  `--iqr` (relative to its median), or `--max-pairs` is reached. The table gives the median step times
  and the ratio's median [IQR] (wall-clock; on a CPU also the ratio of process CPU times);
- peak memory: CPU: peak resident set size during one step after the warm-up (VmHWM, reset through
  /proc/self/clear_refs) minus the size before it; GPU: peak allocated CUDA memory minus that before it.

With a GPU (`torch.cuda.is_available()`) it measures there, and also reports training and inference
images/s under bf16 and fp16 autocast (fp16 with a gradient scaler), each also interleaved.

    .venv/bin/python benchmarks/train_step.py                       # small presets, CPU: ~10 min, 2 cores
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


def interleaved(
    runs: tuple[Callable[[], object], Callable[[], object]],
    device: torch.device,
    min_pairs: int,
    max_pairs: int,
    max_iqr: float,
) -> dict:
    """Alternate the two runs until the ratio second / first of each pair has a known spread.

    Returns the median wall-clock and process CPU seconds of each run and the ratios' median and
    interquartile range (wall and CPU), over at least `min_pairs` pairs, stopping when the IQR of the
    wall ratio is at most `max_iqr` x its median or at `max_pairs`.
    """
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    while True:
        for k, run in enumerate(runs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall[k].append(time.perf_counter() - start_wall)
            cpu[k].append(time.process_time() - start_cpu)
        ratios = [b / a for a, b in zip(*wall, strict=True)]
        median, iqr = median_iqr(ratios)
        if len(ratios) >= max_pairs or (len(ratios) >= min_pairs and iqr <= max_iqr * median):
            break
    cpu_median, cpu_iqr = median_iqr([b / max(a, 1e-9) for a, b in zip(*cpu, strict=True)])
    return {
        "wall_s": [statistics.median(w) for w in wall],
        "cpu_s": [statistics.median(c) for c in cpu],
        "ratio": median,
        "ratio_iqr": iqr,
        "cpu_ratio": cpu_median,
        "cpu_ratio_iqr": cpu_iqr,
        "pairs": len(ratios),
    }


def median_iqr(values: list[float]) -> tuple[float, float]:
    """Median and interquartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return values[0], 0.0
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return quartiles[1], quartiles[2] - quartiles[0]


def measure(name: str, preset: str, size: tuple[int, int], batch: int, pairs: tuple[int, int, float]) -> dict:
    """Both variants of one architecture in this process: interleaved float32 steps and inference, peak
    memory, and on a GPU also interleaved bf16/fp16 images/s."""
    from msccl.contrastive import MSCSContrastiveLoss
    from msccl.data.synthetic import SyntheticSegmentation
    from msccl.data.transforms import eval_transform
    from msccl.training import SegmentationModule

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from models import at_size  # Swin's patch grid follows the input size

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = SyntheticSegmentation(batch, size, NUM_CLASSES, seed=0, transform=eval_transform())
    samples = [dataset[i] for i in range(batch)]
    images = torch.stack([s["image"] for s in samples]).to(device)
    labels = torch.stack([s["label"] for s in samples]).to(device)
    net = partial(models.get(name), **at_size(models.get(name).presets[preset], size))
    steps, inferences, modules = [], [], []
    for contrastive in (False, True):
        torch.manual_seed(0)  # the same network weights for both variants: the heads are built after it
        module = SegmentationModule(
            net, NUM_CLASSES, contrastive=MSCSContrastiveLoss if contrastive else None
        )
        module.to(device)
        parameters = [p for m in module.trainable_modules() for p in m.parameters()]
        optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9)
        modules.append(module)
        steps.append(partial(train_step, module, optimizer, images, labels, contrastive))
        inferences.append(partial(inference, module, images))

    warm_up = 3 if device.type == "cuda" else 1  # CUDA: kernel selection, allocator, autocast casts
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    for module in modules:
        module.train()
    for step in steps:
        for _ in range(warm_up):  # optimiser state, allocator, kernels
            step()
        result.setdefault("train_peak_mib", []).append(peak_memory_mib(step, device))
    result["train"] = interleaved(tuple(steps), device, *pairs)
    for module in modules:
        module.eval()
    for infer in inferences:
        for _ in range(warm_up):
            infer()
    result["infer"] = interleaved(tuple(inferences), device, *pairs)
    if device.type == "cuda":
        for label, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            for module in modules:
                module.train()
            runs = [
                partial(step, dtype=dtype, scaler=torch.amp.GradScaler("cuda") if label == "fp16" else None)
                for step in steps
            ]
            for run in runs:
                for _ in range(warm_up):
                    run()
            result[f"train_{label}"] = interleaved(tuple(runs), device, *pairs)
            for module in modules:
                module.eval()
            runs = [partial(infer, dtype=dtype) for infer in inferences]
            for run in runs:
                for _ in range(warm_up):
                    run()
            result[f"infer_{label}"] = interleaved(tuple(runs), device, *pairs)
    return result


def train_step(
    module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    contrastive: bool,
    dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """What `training_step` does without logging: forward with taps, every loss, backward, SGD step."""
    with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
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


def inference(module, images: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    with (
        torch.no_grad(),
        torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
    ):
        module(images)


def run_in_fresh_process(name: str, preset: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", name, preset, "--size", *map(str, args.size)]
    command += [f"--batch={args.batch}", f"--repeats={args.repeats}", f"--max-pairs={args.max_pairs}"]
    command += [f"--iqr={args.iqr}"]
    if args.threads:
        command.append(f"--threads={args.threads}")
    # a fixed mmap threshold: freed tensors go back to the system, so the resident size after the warm-up
    # step is what is alive, and the next step's peak is what that step needs (glibc otherwise raises the
    # threshold after the first large free and keeps later tensors' memory resident once freed)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{name} {preset} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio_cell(timing: dict, key: str = "ratio") -> str:
    return f"{timing[key]:.2f} [{timing[key + '_iqr']:.2f}]"


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
    parser.add_argument("--repeats", type=int, default=5, help="at least this many interleaved pairs")
    parser.add_argument("--max-pairs", type=int, default=30, help="at most this many pairs (default 30)")
    parser.add_argument(
        "--iqr", type=float, default=0.05, help="stop when the ratio's IQR is below this x its median"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--child", nargs=2, metavar=("ARCHITECTURE", "PRESET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if len(args.size) > 2:
        parser.error("--size takes HEIGHT [WIDTH]")
    if not 1 <= args.repeats <= args.max_pairs:
        parser.error("--repeats must be between 1 and --max-pairs")
    args.size = (args.size[0], args.size[-1])
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        name, preset = args.child
        print(
            json.dumps(measure(name, preset, args.size, args.batch, (args.repeats, args.max_pairs, args.iqr)))
        )
        return

    preset = "paper" if args.paper else "small"
    names = [n for n in args.architectures if preset in models.get(n).presets]
    load = os.getloadavg()[0]
    rows, gpu_rows, device = [], [], "cpu"
    for name in names:
        result = run_in_fresh_process(name, preset, args)
        device, train, infer = result["device"], result["train"], result["infer"]
        print(f"  done: {name} ({train['pairs']} pairs, ratio {ratio_cell(train)})", file=sys.stderr)
        ce_peak, full_peak = result["train_peak_mib"]
        cells = [
            f"{train['wall_s'][0]:.3f}",
            f"{train['wall_s'][1]:.3f}",
            f"**{ratio_cell(train)}**",
            ratio_cell(train, "cpu_ratio"),
            str(train["pairs"]),
            f"{ce_peak:.0f}",
            f"{full_peak:.0f}",
            f"**{full_peak / ce_peak:.2f}**",
            f"{infer['wall_s'][0]:.3f}",
            f"{infer['wall_s'][1]:.3f}",
            ratio_cell(infer),
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        if "train_bf16" in result:
            cells = []
            for kind in ("train", "infer"):
                for dtype in ("bf16", "fp16"):
                    timing = result[f"{kind}_{dtype}"]
                    ce, full = (args.batch / t for t in timing["wall_s"])
                    # images/s ratio = 1 / time ratio
                    cells.append(
                        f"{ce:.1f} / {full:.1f} ({1 / timing['ratio']:.2f} [{timing['ratio_iqr']:.2f}])"
                    )
            gpu_rows.append(f"| {name} | " + " | ".join(cells) + " |")
    threads = args.threads or torch.get_num_threads()
    where = (
        device
        if device != "cpu"
        else f"CPU, {threads} threads, load average {load:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(
        f"\n{preset} presets, batch {args.batch} of {args.size[0]}x{args.size[1]} synthetic images "
        f"({NUM_CLASSES} classes), float32, torch {torch.__version__}, {where}; CE and CE + contrastive "
        f"steps interleaved in one process, at least {args.repeats} pairs after a warm-up, until the ratio's "
        f"IQR <= {args.iqr} x median or {args.max_pairs} pairs; ratio = with / without the contrastive loss, "
        "median [IQR] over the pairs; times are medians."
    )
    print(
        "\n| architecture | train step CE (s) | + contrastive (s) | time ratio [IQR] | CPU-time ratio [IQR] "
        "| pairs | peak mem CE (MiB) | + contrastive (MiB) | memory ratio | inference CE (s) "
        "| + contrastive (s) | inference ratio [IQR] |"
    )
    print("|---|" + "---:|" * 11)
    print("\n".join(rows))
    if gpu_rows:
        print("\nimages/s CE / CE + contrastive (their ratio [IQR]) under autocast, interleaved as above:")
        print("| architecture | train bf16 | train fp16 | infer bf16 | infer fp16 |")
        print("|---|" + "---:|" * 4)
        print("\n".join(gpu_rows))


if __name__ == "__main__":
    main()
