"""Forward+backward time and peak memory of msccl's contrastive loss versus a loop-based baseline.

Setting (a training batch of the paper's networks): batch 8, 4 scales of a 512x512 input (feature maps
128, 64, 32, 16), 256 channels, 19 classes, in two label regimes:

- typical: many classes and small objects (N of a few hundred to ~1000 samples per scale);
- cap-bound: two large regions per image (N = 10000 at the two finest scales).

Implementations: ``baseline`` (the loop, dense per-class matrices), ``msccl`` (the blockwise path,
float32), ``msccl-bf16`` / ``msccl-tf32`` (the blockwise path's accuracy model of tensor-core inputs:
operands rounded, float32 products; no faster on a CPU), ``triton-tf32``, ``triton-bf16`` (the fused
kernels, ``--device cuda`` with Triton installed; there is no float32 kernel: ``highest`` runs
blockwise). Each msccl row also gives its accuracy against the float64 blockwise loss on the same
samples: the loss's relative error and the cosine of the gradients w.r.t. the sampled vectors (issue 13's
targets: 1e-5 / 0.9999 with float32 inputs, 1e-3 / 0.999 at bf16).

Pixel contrast (Wang et al., ICCV 2021; docs/method.md P) on the stride-4 map as its projected feature,
with predictions that differ from the labels on 30% of the pixels: ``pixel-msccl`` (msccl's
``PixelContrastLoss``) against ``pixel-baseline`` (``benchmarks/pixel_contrast_baseline.py``, the
original's loops written from the description), and with the memory banks at the original's memory
settings (5000 entries per class and queue, 10 pixels per step, temperature 0.07, 1 view per class; the
step includes the enqueue): ``pixel-memory-msccl`` against ``pixel-memory-baseline``. Their speed-up is
against their own baseline; their N is the number of anchor views.

Every (implementation, regime) runs in a fresh subprocess. Peak memory is the peak resident set size
(Linux VmHWM, reset through /proc/self/clear_refs just before the first step) minus the resident set
size at that moment, i.e. what one forward+backward adds on top of its inputs (the feature-map
gradients included); on CUDA the peak allocated memory minus that allocated before the step, and
times are synchronised. Times are medians over ``--repeats`` forward+backward steps after that first one,
as wall-clock and as process CPU time; the table states the machine's load average, since other
processes on a shared machine slow both down (with several threads, CPU time counts spin-waits too:
``--threads 1`` gives the most load-robust CPU-time comparison).

    .venv/bin/python benchmarks/contrastive_loss.py [--repeats 3] [--regimes typical cap-bound] [--threads N]
    python benchmarks/contrastive_loss.py --device cuda --repeats 20     # every implementation on the GPU
"""

from __future__ import annotations

import argparse
import dataclasses
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
# implementation -> MSCSContrastiveLoss settings (None: the loop baseline)
IMPLEMENTATIONS: dict[str, dict | None] = {
    "baseline": None,
    "msccl": {"kernel": "blockwise", "matmul_precision": "highest"},
    "msccl-tf32": {"kernel": "blockwise", "matmul_precision": "tf32"},
    "msccl-bf16": {"kernel": "blockwise", "matmul_precision": "bf16"},
    "triton-tf32": {"kernel": "triton", "matmul_precision": "tf32"},
    "triton-bf16": {"kernel": "triton", "matmul_precision": "bf16"},
}
# implementation -> (memory banks, loop baseline) of pixel contrast; its speed-up is against BASELINE_OF
PIXEL_IMPLEMENTATIONS: dict[str, tuple[bool, bool]] = {
    "pixel-baseline": (False, True),
    "pixel-msccl": (False, False),
    "pixel-memory-baseline": (True, True),
    "pixel-memory-msccl": (True, False),
}
BASELINE_OF = {
    impl: "pixel-memory-baseline" if memory else "pixel-baseline"
    for impl, (memory, _) in PIXEL_IMPLEMENTATIONS.items()
}
PIXEL_SETTINGS = {"temperature": 0.1, "base_temperature": 0.07, "max_samples": 1024, "max_views": 100}
PIXEL_MEMORY_SETTINGS = {**PIXEL_SETTINGS, "temperature": 0.07, "max_views": 1, "pixel_update_freq": 10}
MEMORY_SIZE = 5000
PIXEL = ["pixel-baseline", "pixel-msccl", "pixel-memory-baseline", "pixel-memory-msccl"]
DEFAULT_IMPLEMENTATIONS = {
    "cpu": ["baseline", "msccl", *PIXEL],
    "cuda": ["baseline", "msccl", "triton-tf32", "triton-bf16", *PIXEL],
}


def make_labels(regime: str, seed: int = 0, batch: int = BATCH) -> torch.Tensor:
    """Synthetic train-id labels [B, 512, 512] of a regime; a fixed seed, so both implementations agree."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.empty(batch, SIZE, SIZE, dtype=torch.long)
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    for b in range(batch):
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


def make_features(seed: int = 1, batch: int = BATCH) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CHANNELS, SIZE // s, SIZE // s, generator=g).requires_grad_() for s in STRIDES]


def make_predictions(labels: torch.Tensor, seed: int = 2) -> torch.Tensor:
    """Predicted ids: the labels, with a random class on 30% of the pixels (and on every ignored one)."""
    g = torch.Generator().manual_seed(seed)
    wrong = torch.randint(0, CLASSES, labels.shape, generator=g)
    flip = (torch.rand(labels.shape, generator=g) < 0.3) | (labels == IGNORE)
    return torch.where(flip, wrong, labels)


def pixel_step(impl: str, labels: torch.Tensor, feature: torch.Tensor, samples: list[int]):
    """One forward+backward of a pixel-contrast implementation on the stride-4 map (a closure)."""
    from pixel_contrast_baseline import LoopPixelContrastLoss

    from msccl.contrastive import PixelContrastLoss

    memory, loop = PIXEL_IMPLEMENTATIONS[impl]
    predictions = make_predictions(labels.cpu()).to(labels.device)
    settings = PIXEL_MEMORY_SETTINGS if memory else PIXEL_SETTINGS
    torch.manual_seed(0)  # the same initial queues for both implementations
    loss_fn = PixelContrastLoss(
        CLASSES, IGNORE, embedding_dim=CHANNELS, memory_size=MEMORY_SIZE if memory else 0, **settings
    ).to(feature.device)
    if loop:
        queues = None if loss_fn.memory is None else dict(loss_fn.memory.named_buffers())
        baseline = LoopPixelContrastLoss(CLASSES, IGNORE, memory=queues, **settings)

        def step() -> float:
            loss = baseline(feature, labels, predictions)
            loss.backward()
            return loss.item()

        return step

    def step() -> float:
        loss, terms = loss_fn([feature], labels, predictions)
        loss.backward()
        samples[:] = [int(terms["anchors"] * terms["views"])]
        return loss.item()

    return step


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_one(impl: str, regime: str, repeats: int, threads: int | None, device: str, batch: int) -> dict:
    """One configuration, in this (fresh) process."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from contrastive_baseline import LoopContrastiveLoss

    from msccl.contrastive import MSCSContrastiveLoss

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    labels = make_labels(regime, batch=batch).to(device)
    features = [x.detach().to(device).requires_grad_() for x in make_features(batch=batch)]
    samples: list[int] = []
    settings = IMPLEMENTATIONS.get(impl)
    if impl in PIXEL_IMPLEMENTATIONS:
        features = features[:1]  # the stride-4 map stands for the projected decoder feature
        step = pixel_step(impl, labels, features[0], samples)
    elif settings is not None:
        loss_fn = MSCSContrastiveLoss(num_classes=CLASSES, **settings)

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

    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
        before = _rss_kib("VmRSS") * 1024
    loss = step()
    if cuda:
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _rss_kib("VmHWM") * 1024 - before
    wall, cpu = [], []
    for _ in range(repeats):
        for x in features:
            x.grad = None
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    result = {
        "wall_s": statistics.median(wall),
        "cpu_s": statistics.median(cpu),
        "peak_mib": peak / 2**20,
        "loss": loss,
        "samples": samples,
    }
    if settings is not None:  # MS + CS rows: accuracy against the float64 loss
        result.update(accuracy(loss_fn, features, labels))
    return result


def loss_and_grads(loss_fn, drawn: list, dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``loss_fn.loss_from_samples`` on ``drawn`` samples cast to ``dtype``, and its gradients with respect
    to the sampled vectors (zeros for a scale the loss does not use)."""
    leaves = [None if d is None else d.features.detach().to(dtype).requires_grad_() for d in drawn]
    samples = [
        None if d is None else dataclasses.replace(d, features=x) for d, x in zip(drawn, leaves, strict=True)
    ]
    loss, _ = loss_fn.loss_from_samples(samples)
    used = [x for x in leaves if x is not None]
    return loss, list(torch.autograd.grad(loss, used, allow_unused=True, materialize_grads=True))


def accuracy(loss_fn, features: list[torch.Tensor], labels: torch.Tensor) -> dict:
    """Relative loss error and gradient cosine of ``loss_fn`` against the float64 blockwise loss on the
    same samples (gradients w.r.t. the sampled vectors, all scales together)."""
    from msccl.contrastive import MSCSContrastiveLoss

    drawn = loss_fn.draw_samples(features, labels, generator=torch.Generator(labels.device).manual_seed(0))
    exact_fn = MSCSContrastiveLoss(num_classes=CLASSES, kernel="blockwise", matmul_precision="highest")
    results = []
    for fn, dtype in ((loss_fn, torch.float32), (exact_fn, torch.float64)):
        loss, grads = loss_and_grads(fn, drawn, dtype)
        results.append((loss.double(), torch.cat([g.double().flatten() for g in grads])))
    (loss, grad), (exact, exact_grad) = results
    cosine = torch.nn.functional.cosine_similarity(grad, exact_grad, dim=0)
    return {"rel_error": abs(loss / exact - 1).item(), "grad_cosine": cosine.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after the first (default 3)")
    parser.add_argument(
        "--regimes", nargs="+", default=["typical", "cap-bound"], choices=["typical", "cap-bound"]
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--impls",
        nargs="+",
        choices=[*IMPLEMENTATIONS, *PIXEL_IMPLEMENTATIONS],
        help="default: baseline msccl and the pixel-contrast rows (CPU), all (CUDA)",
    )
    parser.add_argument(
        "--batch", type=int, default=BATCH, help=f"images (default {BATCH}, docs/method.md B8)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "REGIME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.child:
        print(
            json.dumps(
                run_one(args.child[0], args.child[1], args.repeats, args.threads, args.device, args.batch)
            )
        )
        return
    impls = args.impls or DEFAULT_IMPLEMENTATIONS[args.device]  # ratios need the baseline among them

    load_before = os.getloadavg()[0]
    results: dict[tuple[str, str], dict] = {}
    failures: list[tuple[str, str, str]] = []
    for regime in args.regimes:
        for impl in impls:
            command = [sys.executable, __file__, "--child", impl, regime, "--repeats", str(args.repeats)]
            command += ["--device", args.device, "--batch", str(args.batch)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            out = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            if out.returncode != 0:  # reported in its row; the other rows still run
                print(f"{impl} {regime} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                failures.append((regime, impl, (out.stderr.strip().splitlines() or ["no output"])[-1]))
                continue
            results[regime, impl] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  done: {regime:9s} {impl:11s} {results[regime, impl]['wall_s']:.4f} s", file=sys.stderr)

    threads = args.threads or torch.get_num_threads()
    where = (
        f"{torch.cuda.get_device_name()}"
        if args.device == "cuda"
        else f"CPU, {threads} threads, {os.cpu_count()} cores, 1-min load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after"
    )
    print(
        f"torch {torch.__version__}, {where}; batch {args.batch}, {SIZE}x{SIZE} input, "
        f"maps {', '.join(str(SIZE // s) for s in STRIDES)}, {CHANNELS} channels, {CLASSES} classes.\n"
        f"wall / cpu: median wall-clock / process CPU time of {args.repeats} forward+backward steps after a "
        "first one; peak mem: what the first step adds at its peak (CPU: VmHWM - VmRSS; CUDA: peak allocated "
        "- allocated); each row a fresh process; rel. error / grad cosine: against the float64 loss on the "
        "same samples."
    )
    columns = [
        "regime",
        "N per scale (msccl)",
        "impl",
        "wall (ms)",
        "cpu (ms)",
        "speed-up wall/cpu",
        "peak mem (MiB)",
        "mem ratio",
        "loss",
        "rel. error",
        "grad cosine",
    ]
    rows = []
    for regime in args.regimes:
        n = next(
            (
                ", ".join(str(v) for v in results[regime, i]["samples"])
                for i in impls
                if i in IMPLEMENTATIONS and i != "baseline" and (regime, i) in results
            ),
            "",
        )
        for impl in impls:
            if (regime, impl) not in results:
                continue
            r = results[regime, impl]
            base = results.get((regime, BASELINE_OF.get(impl, "baseline")))
            if impl in PIXEL_IMPLEMENTATIONS:
                n_row = ", ".join(str(v) for v in r["samples"]) or "-"
            else:
                n_row = n
            rows.append(
                [
                    regime,
                    n_row,
                    impl,
                    f"{1000 * r['wall_s']:.1f}",
                    f"{1000 * r['cpu_s']:.1f}",
                    f"{base['wall_s'] / r['wall_s']:.1f}x / {base['cpu_s'] / r['cpu_s']:.1f}x"
                    if base
                    else "-",
                    f"{r['peak_mib']:.0f}",
                    f"{r['peak_mib'] / base['peak_mib']:.3f}" if base else "-",
                    f"{r['loss']:.4f}",
                    f"{r['rel_error']:.1e}" if "rel_error" in r else "-",
                    f"{r['grad_cosine']:.6f}" if "grad_cosine" in r else "-",
                ]
            )
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
    for regime, impl, message in failures:
        print(f"| {regime} | | {impl} | failed: {message} |")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
