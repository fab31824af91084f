"""The contrastive loss on a CUDA GPU under autocast: float16 and bfloat16 vs float32 (docs/method.md B2).

Same inputs as `contrastive_loss.py` (batch 8, 4 scales of a 512x512 input, 256 channels, 19 classes; the
typical and cap-bound label regimes). The embeddings reach the loss in the autocast dtype, as a
projection head's output does under AMP. For each dtype it reports the loss, its difference from float32,
the cosine similarity of the embedding gradients with float32's, whether everything is finite, the
forward+backward time (median of `--repeats` after a warm-up) and the peak CUDA memory of one step. The
loop baseline written from the spec (`contrastive_baseline.py`), which computes in its input dtype as
the original code does, is shown next to it, to show what float32 accumulation buys.

    python benchmarks/cuda_amp.py [--repeats 5]          # needs a CUDA GPU; about a minute on an H100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from contrastive_baseline import LoopContrastiveLoss  # noqa: E402
from contrastive_loss import CLASSES, make_features, make_labels  # noqa: E402

from msccl.contrastive import MSCSContrastiveLoss  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def step(loss_fn, features: list[torch.Tensor], labels: torch.Tensor, dtype: torch.dtype):
    """Loss and embedding gradients (float32) of one forward+backward with inputs in `dtype`."""
    leaves = [x.detach().clone().requires_grad_() for x in features]
    torch.manual_seed(0)  # the same samples for every dtype
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not torch.float32):
        output = loss_fn([x.to(dtype) for x in leaves], labels)
        loss = output[0] if isinstance(output, tuple) else output
    loss.float().backward()
    return loss.detach().float(), torch.cat([x.grad.flatten().float() for x in leaves])


def measure(name: str, loss_fn, regime: str, repeats: int) -> list[str]:
    device = torch.device("cuda")
    labels = make_labels(regime).to(device)
    features = [x.detach().to(device) for x in make_features()]
    reference_loss, reference_grad = step(loss_fn, features, labels, torch.float32)
    rows = []
    for label, dtype in DTYPES.items():
        step(loss_fn, features, labels, dtype)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss, grad = step(loss_fn, features, labels, dtype)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            step(loss_fn, features, labels, dtype)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
        cosine = F.cosine_similarity(grad, reference_grad, dim=0).item() if finite else float("nan")
        rows.append(
            f"| {regime} | {name} | {label} | {loss.item():.4f} | {abs(loss - reference_loss).item():.2e} "
            f"| {cosine:.5f} | {'yes' if finite else '**no**'} | {1000 * statistics.median(times):.1f} "
            f"| {peak:.0f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--regimes", nargs="+", default=["typical", "cap-bound"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("cuda_amp.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    implementations = {
        "msccl": MSCSContrastiveLoss(num_classes=CLASSES),
        "loop baseline": LoopContrastiveLoss(num_classes=CLASSES),
    }
    rows = [
        row
        for regime in args.regimes
        for name, loss_fn in implementations.items()
        for row in measure(name, loss_fn, regime, args.repeats)
    ]
    print(
        f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}; forward+backward, median of "
        f"{args.repeats} after a warm-up; abs diff and gradient cosine: against the same implementation in "
        "float32"
    )
    print("\n| regime | implementation | dtype | loss | abs diff | grad cosine | finite | ms | peak MiB |")
    print("|---|---|---|---:|---:|---:|---|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
