"""Per-class pixel and segment queues of pixel contrast (docs/method.md P6-P8), as module buffers.

The queues and their pointers are buffers, so they travel in every checkpoint's state_dict and a resume
continues with exactly the queues the run had (a queue is training state, like BatchNorm statistics).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msccl.labels import IGNORE_INDEX

__all__ = ["PixelPointerAdvance", "PixelQueuePool", "PixelSegmentMemory", "ranks_within_groups"]

PixelQueuePool = Literal["image_prefix", "class"]
PixelPointerAdvance = Literal["one", "count"]


def ranks_within_groups(groups: Tensor, draws: Tensor) -> Tensor:
    """Rank of every element inside its group when each group is ordered by increasing draw."""
    order = torch.argsort(draws, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    ordered = groups[order]
    position = torch.arange(groups.numel(), device=groups.device)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = torch.cummax(torch.where(starts, position, 0), dim=0).values
    ranks = torch.empty_like(position)
    ranks[order] = position - first
    return ranks


class PixelSegmentMemory(nn.Module):
    """Two queues of ``size`` L2-normalised embeddings per class.

    ``segment_queue`` [K, size, D] receives, per (image, class), the normalised mean key of the class's
    pixels; ``pixel_queue`` [K, size, D] receives ``pixel_update_freq`` keys of single pixels. Both start
    as normalised Gaussian noise, as the original's. Pointers move by the original's rules by default
    (``pointer_advance``).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        size: int,
        pixel_update_freq: int,
        ignore_index: int = IGNORE_INDEX,
        skip_class_zero: bool = True,
        pixel_pool: PixelQueuePool = "image_prefix",
        pointer_advance: PixelPointerAdvance = "one",
    ) -> None:
        super().__init__()
        if size < 1 or pixel_update_freq < 1 or pixel_update_freq > size:
            raise ValueError(
                f"memory_size ({size}) must be >= 1 and pixel_update_freq ({pixel_update_freq}) "
                "in 1..memory_size"
            )
        self.num_classes, self.size, self.pixel_update_freq = num_classes, size, pixel_update_freq
        self.ignore_index = ignore_index
        self.skip_class_zero = skip_class_zero
        self.pixel_pool = pixel_pool
        self.pointer_advance = pointer_advance
        self.register_buffer("segment_queue", F.normalize(torch.randn(num_classes, size, dim), dim=2))
        self.register_buffer("segment_queue_ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("pixel_queue", F.normalize(torch.randn(num_classes, size, dim), dim=2))
        self.register_buffer("pixel_queue_ptr", torch.zeros(num_classes, dtype=torch.long))

    def contrast_set(self) -> tuple[Tensor, Tensor]:
        """The contrast vectors [M, D] and labels [M], a copy in the original's order: per class the
        segment entries then the pixel entries; with ``skip_class_zero`` classes 1..K-1 and then as many
        zero vectors labelled 0 (the original's unfilled rows)."""
        classes, size, dim = self.segment_queue.shape
        first = 1 if self.skip_class_zero else 0
        queue = self.segment_queue.new_zeros(classes, 2 * size, dim)  # one copy, the zero rows included
        queue[: classes - first, :size] = self.segment_queue[first:]
        queue[: classes - first, size:] = self.pixel_queue[first:]
        labels = torch.arange(first, classes + first, device=queue.device) % classes
        return queue.reshape(-1, dim), labels.repeat_interleave(2 * size)

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor, generator: torch.Generator | None = None) -> None:
        """Enqueue normalised keys [B, D, P] whose flat labels [B, L] (L <= P) name positions 0..L-1.

        Pairs (image, class) are visited in image order, classes ascending, as the original's loops. The
        pixel candidates are ordered by pair then position and get one uniform draw each (from
        ``generator``); each pair keeps its K = min(n, pixel_update_freq) candidates with the smallest
        draws, written in increasing draw order.
        """
        batch, dim, _ = keys.shape
        width = labels.shape[1]
        k, size = self.num_classes, self.size
        keys = keys.to(self.segment_queue.dtype)
        enqueued = labels != self.ignore_index
        if self.skip_class_zero:
            enqueued &= labels != 0
        image = torch.arange(batch, device=labels.device).unsqueeze(1)
        pair = torch.where(enqueued, image * k + labels, -1).flatten()
        counts = torch.bincount(pair[pair >= 0], minlength=batch * k)
        pairs = torch.nonzero(counts).squeeze(1)
        if pairs.numel() == 0:
            return
        pair_counts = counts[pairs]
        at = keys[:, :, :width].transpose(1, 2).reshape(-1, dim)  # [B * L, D], row b * L + p
        # segments: the normalised mean key of each pair
        slot_of_pair = torch.full((batch * k,), -1, dtype=torch.long, device=labels.device)
        slot_of_pair[pairs] = torch.arange(pairs.numel(), device=labels.device)
        members = torch.nonzero(pair >= 0).squeeze(1)
        sums = at.new_zeros(pairs.numel(), dim).index_add_(0, slot_of_pair[pair[members]], at[members])
        segments = F.normalize(sums / pair_counts.unsqueeze(1).to(sums.dtype), dim=1)
        # pixels: candidates per pair (its own pixels, or the image's first n positions as the original)
        if self.pixel_pool == "class":
            candidate_pair = slot_of_pair[pair[members]]
            order = torch.argsort(candidate_pair, stable=True)
            candidate_pair, candidate_row = candidate_pair[order], members[order]
        else:
            candidate_pair = torch.arange(pairs.numel(), device=labels.device).repeat_interleave(pair_counts)
            offsets = torch.cumsum(pair_counts, 0) - pair_counts
            position = torch.arange(candidate_pair.numel(), device=labels.device) - offsets[candidate_pair]
            candidate_row = (pairs // k)[candidate_pair] * width + position
        draws = torch.rand(candidate_pair.numel(), generator=generator, device=labels.device)
        rank = ranks_within_groups(candidate_pair, draws)
        taken = torch.minimum(pair_counts, torch.tensor(self.pixel_update_freq, device=labels.device))
        kept = rank < taken[candidate_pair]
        chosen = torch.zeros(pairs.numel(), self.pixel_update_freq, dtype=torch.long, device=labels.device)
        chosen[candidate_pair[kept], rank[kept]] = candidate_row[kept]
        # the pointer walk is sequential (later pairs of a class may overwrite earlier ones): a short host
        # loop over the pairs decides every write, the last write of a slot wins, then one indexed copy each
        segment_ptr, pixel_ptr = self.segment_queue_ptr.tolist(), self.pixel_queue_ptr.tolist()
        segment_writes: dict[int, int] = {}
        pixel_writes: dict[int, tuple[int, int]] = {}
        for j, (flat, count) in enumerate(zip(pairs.tolist(), taken.tolist(), strict=True)):
            c = flat % k
            segment_writes[c * size + segment_ptr[c]] = j
            segment_ptr[c] = (segment_ptr[c] + 1) % size
            start = pixel_ptr[c]
            if start + count >= size:
                first, pixel_ptr[c] = size - count, 0
            else:
                first = start
                pixel_ptr[c] = (start + (1 if self.pointer_advance == "one" else count)) % size
            for r in range(count):
                pixel_writes[c * size + first + r] = (j, r)
        device = self.segment_queue.device
        segment_rows = torch.tensor(list(segment_writes), dtype=torch.long, device=device)
        segment_source = torch.tensor(list(segment_writes.values()), dtype=torch.long, device=device)
        self.segment_queue.view(-1, dim)[segment_rows] = segments[segment_source]
        pixel_rows = torch.tensor(list(pixel_writes), dtype=torch.long, device=device)
        source = torch.tensor(list(pixel_writes.values()), dtype=torch.long, device=device)
        pixels = F.normalize(at[chosen[source[:, 0], source[:, 1]]], dim=1)
        self.pixel_queue.view(-1, dim)[pixel_rows] = pixels
        self.segment_queue_ptr.copy_(torch.tensor(segment_ptr))
        self.pixel_queue_ptr.copy_(torch.tensor(pixel_ptr))
