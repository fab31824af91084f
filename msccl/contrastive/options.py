"""The named options of the contrastive losses: each one's allowed values, and the one check of them.

Every public entry (a loss's constructor, a public function of ``msccl.contrastive``) checks the options
it is given with ``check_option``, so a wrong value fails where the user wrote it, with one message that
names the option and its allowed values; the private helpers behind an entry take them as valid.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = [
    "Budget",
    "Kernel",
    "LabelDownsampling",
    "MatmulPrecision",
    "MAX_TRITON_DIM",
    "MatmulPrecisionOrAuto",
    "check_option",
]

MatmulPrecision = Literal["highest", "tf32", "bf16"]
"""Inputs of the products of normalised vectors: float32, TF32 or bfloat16 (sums stay float32)."""

MatmulPrecisionOrAuto = Literal["auto", MatmulPrecision]
"""A loss's ``matmul_precision``: ``auto`` picks one per step from the dtype of the sampled features."""

Kernel = Literal["auto", "blockwise", "triton"]
"""What computes the InfoNCE (``msccl.contrastive.infonce``)."""

MAX_TRITON_DIM = 256
"""The widest vectors the Triton kernels take: their [rows, D] float32 accumulators must fit the
registers. Wider ones run blockwise."""

LabelDownsampling = Literal["nearest", "majority"]
"""How labels are brought to a feature map's size (``msccl.contrastive.sampling.downsample_labels``)."""

Budget = Literal["per_device", "global"]
"""Whose pairs set the views per pair and whose samples are contrasted: each rank's own (``per_device``,
the paper's) or those of all ranks (``global``)."""


def check_option(name: str, value: object, allowed: Any) -> None:
    """Raise ValueError naming the option ``name`` and the values of the Literal ``allowed`` unless
    ``value`` is one of them."""
    choices = get_args(allowed)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
