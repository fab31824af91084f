"""The per-positive InfoNCE of method.md A3 for one set of anchors against one contrast set.

For anchor i with positives P(i) and negatives Neg(i) in the contrast set, l_ij = <z_i, z_j> / tau and
S_i = sum_{n in Neg(i)} exp(l_in):

    log p_ip = l_ip - log(exp(l_ip) + S_i) = logsigmoid(l_ip - log S_i)
    L_i      = -(1 / |P(i)|) sum_{p in P(i)} log p_ip          (0 when P(i) is empty)
    loss     = mean of L_i over all anchors

Only the one positive p is in each denominator (this is not SupCon). The implementation (method.md B2,
B8) works in float32 (float64 inputs stay float64, for gradcheck) with autocast disabled, computes log
S_i with a log-sum-exp over the negatives, and walks the anchors in row blocks so that memory is
O(block_size * N_contrast) instead of O(N_anchors * N_contrast). Because the loss is a scalar, the
gradient w.r.t. the normalised vectors is computed in the same pass as the value, from the same logits
block, and stored ([N, D], not N x N); backward only scales it. This avoids both storing N x N
intermediates and recomputing the logits, and every element of a block is visited by a few in-place
passes only. Both sets are sorted by label internally so that each anchor's positives form one
contiguous column range: the positive-only work touches that range, not the whole row.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["infonce"]


def infonce(
    anchors: Tensor,
    anchor_labels: Tensor,
    contrast: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    *,
    temperature: float = 0.1,
    block_size: int = 512,
) -> Tensor:
    """Mean per-positive InfoNCE of ``anchors`` [Na, D] against ``contrast`` [Nc, D] (method.md A3).

    The vectors are L2-normalised here. With ``contrast=None`` the anchors are contrasted with
    themselves and every anchor is excluded from its own positives (the multi-scale term, A4); otherwise
    the two sets are distinct (the cross-scale term) and nothing is excluded. ``block_size`` is the
    number of anchor rows whose logits are held in memory at once (B2). An empty anchor or contrast set
    gives 0 with zero gradients.
    """
    if (contrast is None) != (contrast_labels is None):
        raise ValueError("give both contrast and contrast_labels, or neither")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    _check_pair(anchors, anchor_labels, "anchors")
    if contrast is not None:
        _check_pair(contrast, contrast_labels, "contrast")
        if contrast.shape[1] != anchors.shape[1]:
            raise ValueError(f"anchors have dimension {anchors.shape[1]} but contrast {contrast.shape[1]}")
    # method.md B2: float32 math whatever the autocast state or the input precision.
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        dtype = torch.float64 if anchors.dtype == torch.float64 else torch.float32
        za = F.normalize(anchors.to(dtype), dim=1)
        zc = None if contrast is None else F.normalize(contrast.to(dtype), dim=1)
        grad_on = torch.is_grad_enabled()
        needs = (grad_on and za.requires_grad, grad_on and zc is not None and zc.requires_grad)
        return _InfoNCE.apply(za, zc, anchor_labels, contrast_labels, 1.0 / temperature, block_size, needs)


def _check_pair(vectors: Tensor, labels: Tensor | None, name: str) -> None:
    if vectors.dim() != 2 or labels is None or labels.shape != vectors.shape[:1]:
        raise ValueError(f"{name} must be [N, D] with labels [N], got {tuple(vectors.shape)} and labels "
                         f"{None if labels is None else tuple(labels.shape)}")


class _InfoNCE(torch.autograd.Function):
    """Value and gradient in one blocked pass; backward scales the stored gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        za: Tensor,
        zc: Tensor | None,
        ya: Tensor,
        yc: Tensor | None,
        inv_tau: float,
        block_size: int,
        needs: tuple[bool, bool],
    ) -> Tensor:
        loss, grad_a, grad_c = _loss_and_grads(za, ya, zc, yc, inv_tau, block_size, needs)
        ctx.save_for_backward(grad_a, grad_c)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        grad_a, grad_c = ctx.saved_tensors
        return (
            None if grad_a is None else grad_a * grad_loss,
            None if grad_c is None else grad_c * grad_loss,
            None,
            None,
            None,
            None,
            None,
        )


def _loss_and_grads(
    za: Tensor,
    ya: Tensor,
    zc: Tensor | None,
    yc: Tensor | None,
    inv_tau: float,
    block_size: int,
    needs: tuple[bool, bool],
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A3 loss of normalised anchors ``za`` against ``zc`` (None: against themselves, self excluded).

    Returns the loss and its gradients w.r.t. ``za`` and ``zc`` (None where not needed; with
    ``zc=None`` the anchors' gradient includes their role as contrast samples).
    """
    same = zc is None
    # With one set, its rows need both their anchor and their contrast gradients.
    need_a, need_c = (needs[0], needs[0]) if same else needs
    loss = za.new_zeros(())
    n_a = za.shape[0]
    n_c = n_a if same else zc.shape[0]
    if n_a == 0 or n_c == 0:
        # A3: no anchor, or no positive for any anchor: the term is 0.
        zeros_a = torch.zeros_like(za) if need_a else None
        return loss, zeros_a, None if same or not need_c else torch.zeros_like(zc)

    # Sort both sets by label: the positives of an anchor are then one contiguous column range.
    ya_sorted, perm_a = torch.sort(ya.long())
    za_sorted = za[perm_a]
    if same:
        yc_sorted, perm_c, zc_sorted = ya_sorted, perm_a, za_sorted
    else:
        yc_sorted, perm_c = torch.sort(yc.long())
        zc_sorted = zc[perm_c]
    first = torch.searchsorted(yc_sorted, ya_sorted, side="left")
    last = torch.searchsorted(yc_sorted, ya_sorted, side="right")
    # A3: |P(i)| excludes the anchor itself when both sets are the same; anchors without a positive
    # get weight 0 but still count in the mean (the 1 / n_a).
    num_pos = last - first - int(same)
    weight = torch.where(num_pos > 0, 1.0 / (n_a * num_pos.clamp_min(1)).to(za.dtype), 0.0)

    starts = list(range(0, n_a, block_size))
    ends = [min(s + block_size, n_a) for s in starts]
    # The one host synchronisation: the positive column window of every row block.
    windows = torch.stack([first[starts], last[[e - 1 for e in ends]]], dim=1).tolist()

    grad_a = torch.empty_like(za_sorted) if need_a else None
    grad_c = torch.zeros_like(zc_sorted) if need_c else None
    buffer = za.new_empty(ends[0] - starts[0], n_c)
    tiny = torch.finfo(za.dtype).min
    for r0, r1, (c0, c1) in zip(starts, ends, windows):
        anchors = za_sorted[r0:r1]
        logits = torch.mm(anchors * inv_tau, zc_sorted.T, out=buffer[: r1 - r0])
        pos_logits = logits[:, c0:c1].clone()
        same_label = ya_sorted[r0:r1, None] == yc_sorted[None, c0:c1]
        positive = same_label
        if same:
            rows = torch.arange(r0, r1, device=za.device)[:, None]
            positive = same_label & (rows != torch.arange(c0, c1, device=za.device)[None, :])
        # B2: log S_i by a log-sum-exp over the negatives only (every same-label entry masked out).
        logits[:, c0:c1].masked_fill_(same_label, float("-inf"))
        row_max = logits.amax(dim=1, keepdim=True).nan_to_num_(neginf=0.0)
        exp_neg = logits.sub_(row_max).exp_()
        sum_neg = exp_neg.sum(dim=1, keepdim=True)
        # Rows without negatives: log S = -inf, clamped so that p_ip = 1 without inf - inf.
        log_sum_neg = (sum_neg.log() + row_max).clamp_min_(tiny)
        margin = pos_logits.sub_(log_sum_neg)  # log p_ip = logsigmoid(l_ip - log S_i)
        w = weight[r0:r1, None]
        loss -= (w * torch.where(positive, F.logsigmoid(margin), 0.0)).sum()
        if grad_a is None and grad_c is None:
            continue
        # dL/dl_ip = -w_i (1 - p_ip);  dL/dl_in = w_i sum_p (1 - p_ip) * exp(l_in) / S_i;  l = z z' / tau.
        one_minus_p = torch.sigmoid(margin.neg_()).mul_(positive)
        coef = torch.where(sum_neg > 0, w * one_minus_p.sum(dim=1, keepdim=True) / sum_neg, 0.0)
        grad_logits = exp_neg.mul_(coef * inv_tau)
        grad_logits[:, c0:c1].sub_(one_minus_p.mul_(w * inv_tau))
        if grad_a is not None:
            torch.mm(grad_logits, zc_sorted, out=grad_a[r0:r1])
        if grad_c is not None:
            grad_c.addmm_(grad_logits.T, anchors)

    # Undo the sort; with one set, the rows' gradient sums their anchor and contrast roles.
    if same:
        grad = None if grad_a is None else torch.empty_like(za).index_copy_(0, perm_a, grad_a + grad_c)
        return loss, grad, None
    if grad_a is not None:
        grad_a = torch.empty_like(za).index_copy_(0, perm_a, grad_a)
    if grad_c is not None:
        grad_c = torch.empty_like(zc).index_copy_(0, perm_c, grad_c)
    return loss, grad_a, grad_c
