"""One progress bar for msccl's long jobs outside training (data check, class presence, browse, sweep
trials, export checks): counts, rate and ETA on stderr, silent when stderr is not a terminal (logs, CI,
pipes) or when the caller asks for quiet. Training keeps Lightning's own bar."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

__all__ = ["progress"]

Item = TypeVar("Item")


def progress(
    iterable: Iterable[Item] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    quiet: bool = False,
) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one, `.update(n)`, when None) that draws only on a terminal.

    Disabled bars cost nothing and still iterate, so callers never branch on whether one is shown.
    """
    shown = not quiet and sys.stderr.isatty()
    return tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=not shown, dynamic_ncols=True, leave=False
    )
