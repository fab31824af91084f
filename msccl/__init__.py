"""msccl: multi-scale and cross-scale supervised contrastive learning for semantic segmentation.

Importing msccl (or any of its modules) leaves the process environment alone; the `msccl` command sets
its offline defaults itself (msccl._offline), and an application (a notebook, a script) may do the same
with `msccl.set_offline_defaults()` before it imports anything else.

`msccl.Segmenter` (inference from a checkpoint, `msccl.api`) is imported on first use: `import msccl`
stays light (no torch, no Lightning). `msccl.config_path("synthetic")` finds a packaged config
(`msccl.configs`), in a checkout and in an installed wheel alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msccl._offline import set_offline_defaults
from msccl._version import __version__
from msccl.configs import config_path

if TYPE_CHECKING:
    from msccl.api import Segmenter

__all__ = ["Segmenter", "__version__", "config_path", "set_offline_defaults"]


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from msccl.api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'msccl' has no attribute {name!r}")
