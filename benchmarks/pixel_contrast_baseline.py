"""A loop-based baseline of pixel contrast (docs/method.md P) with the structure of ContrastiveSeg's code.

Written from the description for benchmarking only: a Python loop over images and their classes with a
nonzero and a randperm per (image, class, hard|easy) pool and a copy into a [T, V, D] buffer, dense
V*T x V*T (or V*T x M with the memory) matrices, the contrast set built class by class from the queues, and
the enqueue as a loop over images and classes. It computes what ``msccl.contrastive.PixelContrastLoss``
does with the original's switches (up to sampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class LoopPixelContrastLoss:
    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        max_samples: int = 1024,
        max_views: int = 100,
        memory: dict[str, Tensor] | None = None,
        pixel_update_freq: int = 10,
    ) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.temperature, self.base_temperature = temperature, base_temperature
        self.max_samples, self.max_views = max_samples, max_views
        self.memory, self.pixel_update_freq = memory, pixel_update_freq

    def __call__(self, features: Tensor, labels: Tensor, predictions: Tensor) -> Tensor:
        batch, dim, h, w = features.shape
        small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest").long().view(batch, -1)
        predicted = F.interpolate(predictions[:, None].float(), size=(h, w), mode="nearest").long()
        predicted = predicted.view(batch, -1)
        z = F.normalize(features, dim=1)
        rows = z.permute(0, 2, 3, 1).reshape(batch, -1, dim)
        anchors, anchor_labels = self.sample(rows, small, predicted)
        if self.memory is None:
            loss = self.dense_loss(anchors, anchor_labels, None, None)
        else:
            loss = self.dense_loss(anchors, anchor_labels, *self.contrast_set())
            self.enqueue(z.detach(), small)
        return loss

    def sample(self, rows: Tensor, labels: Tensor, predicted: Tensor) -> tuple[Tensor, Tensor]:
        classes = []
        for b in range(rows.shape[0]):
            present = [c for c in torch.unique(labels[b]).tolist() if c != self.ignore_index]
            classes.append([c for c in present if int((labels[b] == c).sum()) > self.max_views])
        total = sum(len(c) for c in classes)
        views = min(self.max_samples // total, self.max_views)
        anchors = rows.new_zeros(total, views, rows.shape[2])
        anchor_labels = torch.zeros(total, device=rows.device)
        t = 0
        for b in range(rows.shape[0]):
            for c in classes[b]:  # one nonzero and one randperm per pool
                hard = ((labels[b] == c) & (predicted[b] != c)).nonzero().squeeze(1)
                easy = ((labels[b] == c) & (predicted[b] == c)).nonzero().squeeze(1)
                if 2 * len(hard) >= views and 2 * len(easy) >= views:
                    hard_keep = views // 2
                elif 2 * len(hard) >= views:
                    hard_keep = views - len(easy)
                else:
                    hard_keep = len(hard)
                hard = hard[torch.randperm(len(hard), device=rows.device)[:hard_keep]]
                easy = easy[torch.randperm(len(easy), device=rows.device)[: views - hard_keep]]
                anchors[t] = rows[b, torch.cat([hard, easy])]
                anchor_labels[t] = c
                t += 1
        return anchors, anchor_labels

    def contrast_set(self) -> tuple[Tensor, Tensor]:
        queue = torch.cat([self.memory["segment_queue"], self.memory["pixel_queue"]], dim=1)
        classes, entries, dim = queue.shape
        vectors = queue.new_zeros(classes * entries, dim)
        labels = torch.zeros(classes * entries, device=queue.device)
        at = 0
        for c in range(1, classes):  # class 0 is never in the memory: its rows stay zero, labelled 0
            vectors[at : at + entries] = queue[c]
            labels[at : at + entries] = c
            at += entries
        return vectors, labels

    def enqueue(self, keys: Tensor, labels: Tensor) -> None:
        size = self.memory["segment_queue"].shape[1]
        flat = keys.view(keys.shape[0], keys.shape[1], -1)
        for b in range(keys.shape[0]):
            for c in torch.unique(labels[b]).tolist():
                if c == 0 or c == self.ignore_index:
                    continue
                where = (labels[b] == c).nonzero().squeeze(1)
                ptr = int(self.memory["segment_queue_ptr"][c])
                self.memory["segment_queue"][c, ptr] = F.normalize(flat[b][:, where].mean(1), dim=0)
                self.memory["segment_queue_ptr"][c] = (ptr + 1) % size
                count = min(len(where), self.pixel_update_freq)
                chosen = torch.randperm(len(where), device=keys.device)[:count]
                pixels = F.normalize(flat[b][:, chosen].T, dim=1)
                ptr = int(self.memory["pixel_queue_ptr"][c])
                if ptr + count >= size:
                    self.memory["pixel_queue"][c, size - count :] = pixels
                    self.memory["pixel_queue_ptr"][c] = 0
                else:
                    self.memory["pixel_queue"][c, ptr : ptr + count] = pixels
                    self.memory["pixel_queue_ptr"][c] = (ptr + 1) % size

    def dense_loss(self, anchors: Tensor, labels: Tensor, contrast: Tensor | None, contrast_labels) -> Tensor:
        total, views, _ = anchors.shape
        z = torch.cat(torch.unbind(anchors, dim=1), dim=0)
        y = labels.repeat(views).view(-1, 1)
        c, yc = (z, y) if contrast is None else (contrast, contrast_labels.view(-1, 1))
        logits = z @ c.T / self.temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        positive = (y == yc.T).float()
        negative = 1 - positive
        positive = positive * torch.ones_like(positive).scatter_(
            1, torch.arange(total * views, device=z.device).view(-1, 1), 0
        )
        negative_sum = (torch.exp(logits) * negative).sum(1, keepdim=True)
        log_prob = logits - torch.log(torch.exp(logits) + negative_sum)
        mean_log_prob = (positive * log_prob).sum(1) / positive.sum(1)
        return -(self.temperature / self.base_temperature) * mean_log_prob.mean()
