"""msccl: multi-scale and cross-scale supervised contrastive learning for semantic segmentation.

Importing msccl (or any of its modules) leaves the process environment alone; the `msccl` command sets
its offline defaults itself (msccl._offline), and an application (a notebook, a script) may do the same
with `msccl.set_offline_defaults()` before it imports anything else.

`msccl.Segmenter` (inference from a checkpoint, `msccl.api`) is imported on first use: `import msccl`
stays light (no torch, no Lightning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msccl._offline import set_offline_defaults

if TYPE_CHECKING:
    from msccl.api import Segmenter

__all__ = ["Segmenter", "__version__", "set_offline_defaults"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from msccl.api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'msccl' has no attribute {name!r}")
