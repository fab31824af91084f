"""msccl: multi-scale and cross-scale supervised contrastive learning for semantic segmentation.

Importing msccl (or any of its modules) leaves the process environment alone; the `msccl` command sets
its offline defaults itself (msccl._offline).
"""

__version__ = "0.1.0"
