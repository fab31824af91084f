"""The ``global`` sample budget across DDP ranks (docs/method.md B6).

With ``budget="global"`` every rank

1. reduces the per-pair statistics over ranks (``reduce_pair_stats``), so that V follows the budget rule
   over the global set of present (image, class) pairs, exactly as one process holding the whole
   global batch would;
2. draws its own V samples per local present pair;
3. all-gathers the samples and labels of all ranks (``gather_samples``), in rank order, so that every
   rank computes the same loss over the global sample set and negatives come from the whole batch.

Gradient semantics: rank r's loss L is the same number on every rank, and the gathered tensor's
backward returns, for rank r's own rows, ``world_size * dL/dz_r`` (rows of other ranks are constants
on rank r). DDP then averages parameter gradients over ranks, which divides by world_size, so the
parameters receive sum_r dL/dz_r * dz_r/dtheta: exactly the single-process gradient of the loss over
the concatenated batch. (This assumes DDP's default averaging; with a plain sum of gradients over
ranks, divide the loss weight by the world size.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["gather_samples", "reduce_pair_stats", "world_size"]


def world_size() -> int:
    """Number of processes of the default group, 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def reduce_pair_stats(stats: Tensor) -> Tensor:
    """Local ``[T, min_count]`` -> global ``[sum of T, min of min_count]`` over ranks, for the budget rule."""
    gathered = [torch.empty_like(stats) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, stats.contiguous())
    per_rank = torch.stack(gathered)
    return torch.stack([per_rank[:, 0].sum(), per_rank[:, 1].min()])


def gather_samples(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """All ranks' samples [sum N_r, C] and labels, in rank order; this rank's rows keep their gradient.

    Ranks may hold different numbers of samples: sizes are gathered first and rows padded to the max.
    """
    world = dist.get_world_size()
    size = torch.tensor([features.shape[0]], device=features.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = torch.cat(sizes).tolist()
    gathered = _GatherRows.apply(features, counts, dist.get_rank())
    return gathered, _all_gather_rows(labels, counts)


def _all_gather_rows(x: Tensor, counts: list[int]) -> Tensor:
    most = max(counts)
    if most == 0:
        return x.new_zeros((0, *x.shape[1:]))
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


class _GatherRows(torch.autograd.Function):
    """all_gather of rows; backward keeps this rank's rows, scaled by the world size (see module doc)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, counts: list[int], rank: int) -> Tensor:
        ctx.start = sum(counts[:rank])
        ctx.stop = ctx.start + counts[rank]
        ctx.world = len(counts)
        return _all_gather_rows(x, counts)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad[ctx.start : ctx.stop] * ctx.world, None, None
