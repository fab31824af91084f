"""`msccl plot RUN_DIR [RUN_DIR ...] --output FILE.png`: learning curves from runs' `metrics.csv`.

    msccl plot runs/synthetic/version_0 runs/synthetic/version_1 --output curves.png

Every run is drawn on the same panels, labelled by its run directory (which panels, and what they show:
`msccl.plots.curves`).
"""

from __future__ import annotations

from pathlib import Path

from msccl.commands.flags import CommandParser
from msccl.plots.curves import plot_learning_curves

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """`msccl plot RUN_DIR [RUN_DIR ...] --output FILE.png`."""
    parser = CommandParser(prog="msccl plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories (each with its metrics.csv)")
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--title", default="", help="a title above the panels")
    parser.add_argument("--dpi", type=int, default=100, help="pixels per inch of the PNG (default: 100)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        parser.error(f"--output {output}: give a .png file")
    try:
        runs = {str(run): [run] for run in args.run_dirs}
        path = plot_learning_curves(runs, output, title=args.title, dpi=args.dpi)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"wrote {path}")
    return 0
