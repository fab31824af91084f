"""A loop-based baseline of docs/method.md A2-A4 with the structure of the authors' public code.

Written from the specification for benchmarking only: per scale, a Python loop over the present
(image, class) pairs with one nonzero, one randperm and one gather each from the [B, C, h*w] map (whose
backward writes a dense gradient of the whole map per pair), then dense N x N logits and masks. It
computes the same loss as ``msccl.contrastive.MSCSContrastiveLoss`` in paper mode (up to sampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class LoopContrastiveLoss:
    """The baseline: same defaults as the paper (tau 0.1, weights [1, .7, .4, .1], w_hl = w_hm = 1)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, temperature: float = 0.1) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.temperature = temperature
        self.scale_weights = [1.0, 0.7, 0.4, 0.1]
        self.min_views, self.max_views, self.max_total = 5, 2500, 10000

    def __call__(self, features: list[Tensor], labels: Tensor) -> Tensor:
        loss = features[0].new_zeros(())
        samples = []
        for s, x in enumerate(features):
            z, y = self.sample(x, labels)
            samples.append((z, y))
            loss = loss + self.scale_weights[s] * self.dense_loss(z, y, z, y, same=True)
        for low in (len(features) - 1, len(features) - 2):
            loss = loss + self.dense_loss(*samples[0], *samples[low], same=False)
        return loss

    def sample(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        B, C, h, w = features.shape
        scaled = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest").view(B, -1)
        flat = features.view(B, C, -1)
        classes = torch.arange(self.num_classes, device=features.device)
        compare = scaled.unsqueeze(-1) == classes  # [B, hw, K]
        counts = compare.sum(1)
        batch_ids, class_ids = torch.where(counts >= self.min_views)
        total = class_ids.shape[0]
        views = min(int(counts[batch_ids, class_ids].min()), self.max_views)
        if views * total > self.max_total:
            views = self.max_total // total
        sampled = features.new_zeros(total, C, views)
        sampled_labels = features.new_zeros(total)
        for i in range(total):  # one nonzero, one randperm, one gather per (image, class) pair
            pixels = compare[batch_ids[i], :, class_ids[i]].nonzero().squeeze(1)
            chosen = pixels[torch.randperm(pixels.shape[0], device=pixels.device)[:views]]
            sampled[i] = flat[batch_ids[i], :, chosen]
            sampled_labels[i] = class_ids[i]
        z = sampled.transpose(1, 2).reshape(-1, C)
        return z, sampled_labels.repeat_interleave(views)

    def dense_loss(self, za: Tensor, ya: Tensor, zc: Tensor, yc: Tensor, same: bool) -> Tensor:
        za = F.normalize(za, dim=1)
        zc = F.normalize(zc, dim=1)
        logits = za @ zc.T / self.temperature
        pos = (ya[:, None] == yc[None, :]).float()
        neg = 1 - pos
        if same:
            pos = pos * (1 - torch.eye(len(ya), device=za.device))
        neg_sum = (torch.exp(logits) * neg).sum(1, keepdim=True)
        log_prob = logits - torch.log(torch.exp(logits) + neg_sum)
        num_pos = pos.sum(1)
        mean_log_prob = (pos * log_prob).sum(1) / torch.where(num_pos > 0, num_pos, torch.ones_like(num_pos))
        return -mean_log_prob.mean()
