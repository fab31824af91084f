"""Forward+backward time and peak memory of msccl's contrastive loss versus a loop-based baseline.

Setting (a training batch of the paper's networks): batch 8, 4 scales of a 512x512 input (feature maps
128, 64, 32, 16), 256 channels, 19 classes, in two label regimes:

- typical: many classes and small objects (N of a few hundred to ~1000 samples per scale);
- cap-bound: two large regions per image (N = 10000 at the two finest scales).

Every (implementation, regime) runs in a fresh subprocess. Peak memory is the peak resident set size
(Linux VmHWM, reset through /proc/self/clear_refs just before the first step) minus the resident set
size at that moment, i.e. what one forward+backward adds on top of its inputs (the feature-map
gradients included). Times are medians over ``--repeats`` forward+backward steps after that first one,
as wall-clock and as process CPU time; the table states the machine's load average, since other
processes on a shared machine slow both down (with several threads, CPU time counts spin-waits too:
``--threads 1`` gives the most load-robust CPU-time comparison).

    .venv/bin/python benchmarks/contrastive_loss.py [--repeats 3] [--regimes typical cap-bound] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BATCH, SIZE, CHANNELS, CLASSES, STRIDES = 8, 512, 256, 19, (4, 8, 16, 32)
IGNORE = 255


def make_labels(regime: str, seed: int = 0) -> torch.Tensor:
    """Synthetic train-id labels [B, 512, 512] of a regime; a fixed seed, so both implementations agree."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.empty(BATCH, SIZE, SIZE, dtype=torch.long)
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    for b in range(BATCH):
        if regime == "cap-bound":
            # Two large regions split at 30-70% along a random axis.
            cut = int(torch.randint(int(0.3 * SIZE), int(0.7 * SIZE), (1,), generator=g))
            first, second = torch.randperm(CLASSES, generator=g)[:2].tolist()
            coord = ys if torch.rand(1, generator=g) < 0.5 else xs
            labels[b] = torch.where(coord < cut, first, second)
            continue
        # typical: a Voronoi partition into large "stuff" regions plus small "thing" boxes and some ignore.
        seeds = torch.randint(0, SIZE, (6, 2), generator=g)
        stuff = torch.randint(0, CLASSES, (6,), generator=g)
        dist = (ys[None] - seeds[:, 0, None, None]) ** 2 + (xs[None] - seeds[:, 1, None, None]) ** 2
        image = stuff[dist.argmin(0)]
        for _ in range(12):
            hh, ww = torch.randint(12, 72, (2,), generator=g).tolist()
            y0, x0 = torch.randint(0, SIZE - 72, (2,), generator=g).tolist()
            image[y0 : y0 + hh, x0 : x0 + ww] = int(torch.randint(0, CLASSES, (1,), generator=g))
        y0, x0 = torch.randint(0, SIZE - 128, (2,), generator=g).tolist()
        image[y0 : y0 + 128, x0 : x0 + 128] = IGNORE
        labels[b] = image
    return labels


def make_features(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, CHANNELS, SIZE // s, SIZE // s, generator=g).requires_grad_() for s in STRIDES]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_one(impl: str, regime: str, repeats: int, threads: int | None) -> dict:
    """One configuration, in this (fresh) process."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from contrastive_baseline import LoopContrastiveLoss

    from msccl.contrastive import MSCSContrastiveLoss

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    labels = make_labels(regime)
    features = make_features()
    samples: list[int] = []
    if impl == "msccl":
        loss_fn = MSCSContrastiveLoss(num_classes=CLASSES)

        def step() -> float:
            loss, terms = loss_fn(features, labels)
            loss.backward()
            samples[:] = [int(terms[f"samples/s{s}"]) for s in range(len(STRIDES))]
            return loss.item()
    else:
        baseline = LoopContrastiveLoss(num_classes=CLASSES)

        def step() -> float:
            loss = baseline(features, labels)
            loss.backward()
            return loss.item()

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    rss_before = _rss_kib("VmRSS")
    loss = step()
    peak = _rss_kib("VmHWM") - rss_before
    wall, cpu = [], []
    for _ in range(repeats):
        for x in features:
            x.grad = None
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "wall_s": statistics.median(wall),
        "cpu_s": statistics.median(cpu),
        "peak_mib": peak / 1024,
        "loss": loss,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after the first (default 3)")
    parser.add_argument(
        "--regimes", nargs="+", default=["typical", "cap-bound"], choices=["typical", "cap-bound"]
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "REGIME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.child:
        print(json.dumps(run_one(args.child[0], args.child[1], args.repeats, args.threads)))
        return

    load_before = os.getloadavg()[0]
    results = {}
    for regime in args.regimes:
        for impl in ("baseline", "msccl"):
            command = [sys.executable, __file__, "--child", impl, regime, "--repeats", str(args.repeats)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            out = subprocess.run(
                command,
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            results[regime, impl] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  done: {regime:9s} {impl:8s} {results[regime, impl]['wall_s']:.3f} s", file=sys.stderr)

    threads = args.threads or torch.get_num_threads()
    print(
        f"torch {torch.__version__}, CPU, {threads} threads, {os.cpu_count()} cores, 1-min load average "
        f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after; batch {BATCH}, {SIZE}x{SIZE} input, "
        f"maps {', '.join(str(SIZE // s) for s in STRIDES)}, {CHANNELS} channels, {CLASSES} classes.\n"
        f"wall / cpu: median wall-clock / process CPU time of {args.repeats} forward+backward steps after a "
        "first one; peak mem: peak RSS (VmHWM) minus RSS before the first step; each row a fresh process."
    )
    columns = [
        "regime",
        "N per scale (msccl)",
        "impl",
        "wall (s)",
        "cpu (s)",
        "speed-up wall/cpu",
        "peak mem (MiB)",
        "mem ratio",
        "loss",
    ]
    rows = []
    for regime in args.regimes:
        base, ours = results[regime, "baseline"], results[regime, "msccl"]
        n = ", ".join(str(v) for v in ours["samples"])
        for impl, r in (("baseline", base), ("msccl", ours)):
            rows.append(
                [
                    regime,
                    n,
                    impl,
                    f"{r['wall_s']:.3f}",
                    f"{r['cpu_s']:.3f}",
                    f"{base['wall_s'] / r['wall_s']:.1f}x / {base['cpu_s'] / r['cpu_s']:.1f}x",
                    f"{r['peak_mib']:.0f}",
                    f"{r['peak_mib'] / base['peak_mib']:.3f}",
                    f"{r['loss']:.3f}",
                ]
            )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
