"""Data loading throughput on Cityscapes-size (1024x2048) images: is the loader fast enough for a GPU?

Writes temporary PNGs in the official Cityscapes layout, then measures images/s for
  decode       reading and checking image + label, label map (`CityscapesSegmentation.load`)
  pipeline     decode + the training pipeline of docs/method.md C3 (crop 512x1024), one process
  loader (N)   the DataModule's training DataLoader with N worker processes (batches of --batch-size),
               timed over a second epoch so that worker start-up is not counted
and prints a table with images/s and images/s per worker process.

    python benchmarks/dataloader.py                       # 16 images, workers 0 1 2
    python benchmarks/dataloader.py --images 32 --workers 0 2 4 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from msccl.data import Cityscapes, CityscapesSegmentation
from msccl.data.transforms import seed_pipeline, train_transform

HEIGHT, WIDTH = 1024, 2048


def write_cityscapes_like(root: Path, count: int) -> float:
    """`count` street-like PNG pairs under root/leftImg8bit/train and root/gtFine/train; mean MB per image."""
    rng = np.random.default_rng(0)
    sizes = []
    for index in range(count):
        # large flat regions of real labelIds with smooth shading and mild sensor noise, so PNG sizes
        # resemble the real ones (about 2 MB per image)
        label = cv2.resize(
            rng.choice([7, 8, 11, 17, 21, 23, 26], (16, 32)).astype(np.uint8),
            (WIDTH, HEIGHT),
            interpolation=cv2.INTER_NEAREST,
        )
        colours = rng.integers(30, 220, (256, 3))
        shading = cv2.resize(rng.uniform(0.7, 1.3, (8, 16)), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
        image = colours[label] * shading[..., None] + rng.normal(0, 1.5, (HEIGHT, WIDTH, 3))
        image = np.clip(image, 0, 255).astype(np.uint8)
        stem = f"bench_{index:06d}_000019"
        image_path = root / "leftImg8bit" / "train" / "bench" / f"{stem}_leftImg8bit.png"
        label_path = root / "gtFine" / "train" / "bench" / f"{stem}_gtFine_labelIds.png"
        for path, array in ((image_path, image), (label_path, label)):
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        sizes.append(image_path.stat().st_size / 2**20)
    # the DataModule needs a val split to set up for fitting
    for folder in ("leftImg8bit", "gtFine"):
        (root / folder / "val" / "bench").mkdir(parents=True)
    val = root / "leftImg8bit" / "val" / "bench" / "bench_000000_000019_leftImg8bit.png"
    cv2.imwrite(str(val), np.zeros((32, 64, 3), np.uint8))
    cv2.imwrite(
        str(root / "gtFine" / "val" / "bench" / "bench_000000_000019_gtFine_labelIds.png"),
        np.zeros((32, 64), np.uint8),
    )
    return float(np.mean(sizes))


def measure(run, count: int) -> tuple[float, float]:
    """(images per wall-clock second, CPU milliseconds of this process per image)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return count / (time.perf_counter() - wall), 1000 * (time.process_time() - cpu) / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=16, help="images written and read per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, nargs=2, default=[512, 1024], metavar=("HEIGHT", "WIDTH"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        megabytes = write_cityscapes_like(root, args.images)
        dataset = CityscapesSegmentation(root, "train")
        rows = [
            (
                "decode (image + label + map)",
                1,
                *measure(lambda: [dataset.load(i) for i in range(len(dataset))], len(dataset)),
            )
        ]

        dataset.transform = train_transform(tuple(args.crop))
        seed_pipeline(dataset.transform, 0)
        rows.append(
            (
                "decode + pipeline",
                1,
                *measure(lambda: [dataset[i] for i in range(len(dataset))], len(dataset)),
            )
        )

        for workers in args.workers:
            data = Cityscapes(
                str(root),
                crop_size=tuple(args.crop),
                batch_size=args.batch_size,
                num_workers=workers,
                pin_memory=False,
            )
            data.setup("fit")
            loader = data.train_dataloader()
            epoch = lambda loader=loader: [None for _ in loader]  # noqa: E731
            epoch()  # warm-up epoch: worker start-up is not throughput (workers persist)
            rate, cpu_ms = measure(epoch, len(loader) * args.batch_size)
            rows.append(
                (f"DataLoader, {workers} workers", max(1, workers), rate, cpu_ms if workers == 0 else None)
            )

    crop = "x".join(map(str, args.crop))
    print(
        f"{args.images} PNG pairs of {HEIGHT}x{WIDTH} (image {megabytes:.1f} MB each), crop {crop}, ", end=""
    )
    print(f"batch {args.batch_size}\n")
    print("| measurement | images/s | images/s per process | CPU ms per image (main process) |")
    print("|---|---:|---:|---:|")
    for name, processes, rate, cpu_ms in rows:
        cpu = "-" if cpu_ms is None else f"{cpu_ms:.0f}"
        print(f"| {name} | {rate:.1f} | {rate / processes:.1f} | {cpu} |")


if __name__ == "__main__":
    main()
