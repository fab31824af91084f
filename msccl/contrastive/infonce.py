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
        raise ValueError(
            f"{name} must be [N, D] with labels [N], got {tuple(vectors.shape)} and labels "
            f"{None if labels is None else tuple(labels.shape)}"
        )


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
    n_a = za.shape[0]
    n_c = n_a if same else zc.shape[0]
    if n_a == 0 or n_c == 0:
        # A3: no anchor, or no positive for any anchor: the term is 0.
        zeros_a = torch.zeros_like(za) if need_a else None
        return za.new_zeros(()), zeros_a, None if same or not need_c else torch.zeros_like(zc)

    # Sort both sets by label: an anchor's positives are then one contiguous column range, and row blocks
    # hold a single class each, so no label mask is ever built.
    ya_sorted, perm_a = torch.sort(ya.long())
    za_sorted = za[perm_a]
    runs = [torch.unique_consecutive(ya_sorted, return_counts=True)]
    if not same:
        yc_sorted, perm_c = torch.sort(yc.long())
        zc_sorted = zc[perm_c]
        runs.append(torch.unique_consecutive(yc_sorted, return_counts=True))
    # The one host synchronisation of this term: the class runs of the sorted labels.
    host = [torch.cat(run).tolist() for run in runs]
    anchor_runs = _class_ranges(host[0])
    contrast_runs = anchor_runs if same else _class_ranges(host[-1])

    if same and inv_tau <= _UNSHIFTED_MAX_INV_TAU:
        loss, grad = _intra_symmetric(za_sorted, anchor_runs, inv_tau, block_size, need_a)
        return loss, _unsort(grad, perm_a), None
    loss, grad_a, grad_c = _one_pass(
        za_sorted,
        za_sorted if same else zc_sorted,
        anchor_runs,
        contrast_runs,
        same,
        inv_tau,
        block_size,
        need_a,
        need_c,
    )
    if same:
        return loss, _unsort(None if grad_a is None else grad_a + grad_c, perm_a), None
    return loss, _unsort(grad_a, perm_a), _unsort(grad_c, perm_c)


# Up to this 1/tau, exp(l) with |l| <= 1/tau (unit vectors) can neither overflow nor underflow float32,
# even summed over 10^6 terms (e^60 * 10^6 < 3.4e38 and e^-60 > 1.2e-38): log S_i = log sum exp(l_in)
# is then exact without a max-shift, and one exp of a logits block serves every row and column. Smaller
# temperatures take the shifted log-sum-exp path (method.md B2).
_UNSHIFTED_MAX_INV_TAU = 60.0


def _class_ranges(classes_then_counts: list[int]) -> dict[int, tuple[int, int]]:
    """{class: (start, end)} of a sorted label vector from unique_consecutive's classes and counts."""
    half = len(classes_then_counts) // 2
    ranges, start = {}, 0
    for cls, count in zip(classes_then_counts[:half], classes_then_counts[half:], strict=True):
        ranges[cls] = (start, start + count)
        start += count
    return ranges


def _row_blocks(runs: dict[int, tuple[int, int]], block_size: int) -> list[tuple[int, int, int]]:
    """(class, first row, end row) blocks of at most block_size rows, each inside one class run."""
    return [
        (cls, r0, min(r0 + block_size, end))
        for cls, (start, end) in runs.items()
        for r0 in range(start, end, block_size)
    ]


def _unsort(grad: Tensor | None, perm: Tensor) -> Tensor | None:
    return None if grad is None else torch.empty_like(grad).index_copy_(0, perm, grad)


def _one_pass(
    za: Tensor,
    zc: Tensor,
    anchor_runs: dict[int, tuple[int, int]],
    contrast_runs: dict[int, tuple[int, int]],
    same: bool,
    inv_tau: float,
    block_size: int,
    need_a: bool,
    need_c: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Anchor row blocks against the whole (sorted) contrast set: value and gradients in one pass.

    With ``same`` the two sets are one and the same sorted set; the diagonal is the self-similarity.
    """
    n_a, n_c = za.shape[0], zc.shape[0]
    shifted = inv_tau > _UNSHIFTED_MAX_INV_TAU
    tiny = torch.finfo(za.dtype).min
    scaled = za * inv_tau
    loss = za.new_zeros(())
    grad_a = torch.zeros_like(za) if need_a else None
    grad_c = torch.zeros_like(zc) if need_c else None
    buffer = za.new_empty(min(block_size, n_a), n_c)
    for cls, r0, r1 in _row_blocks(anchor_runs, block_size):
        c0, c1 = contrast_runs.get(cls, (0, 0))  # the columns sharing the block's label
        num_pos = c1 - c0 - int(same)
        if num_pos <= 0:
            continue  # A3: no positive -> L_i = 0 (still counted in the mean through 1 / n_a)
        weight = 1.0 / (n_a * num_pos)
        logits = torch.mm(scaled[r0:r1], zc.T, out=buffer[: r1 - r0])
        margin = logits[:, c0:c1].clone()
        # Same-label entries are not negatives; the rest of the row is Neg(i).
        logits[:, c0:c1] = float("-inf")
        if shifted:
            row_max = logits.amax(dim=1, keepdim=True).nan_to_num_(neginf=0.0)
            logits.sub_(row_max)
        exp_neg = logits.exp_()
        sum_neg = exp_neg.sum(dim=1, keepdim=True)
        log_sum_neg = sum_neg.log()
        if shifted:
            log_sum_neg += row_max
        # No negative at all: log S = -inf, clamped so that p_ip = 1 without inf - inf.
        margin.sub_(log_sum_neg.clamp_min_(tiny))  # log p_ip = logsigmoid(l_ip - log S_i)
        if same:
            margin.diagonal(r0 - c0).fill_(float("inf"))  # the anchor itself: p = 1, contributes nothing
        loss -= weight * F.logsigmoid(margin).sum()
        if grad_a is None and grad_c is None:
            continue
        # dL/dl_ip = -w (1 - p_ip); dL/dl_in = w sum_p (1 - p_ip) exp(l_in) / S_i; and l = <za, zc> / tau.
        one_minus_p = torch.sigmoid(margin.neg_())
        coef = torch.where(sum_neg > 0, one_minus_p.sum(dim=1, keepdim=True) / sum_neg, 0.0)
        grad_logits = exp_neg.mul_(coef * (weight * inv_tau))
        grad_logits[:, c0:c1] = one_minus_p.mul_(-weight * inv_tau)
        if grad_a is not None:
            torch.mm(grad_logits, zc, out=grad_a[r0:r1])
        if grad_c is not None:
            grad_c.addmm_(grad_logits.T, za[r0:r1])
    return loss, grad_a, grad_c


def _intra_symmetric(
    z: Tensor, runs: dict[int, tuple[int, int]], inv_tau: float, block_size: int, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """A set against itself (the multi-scale term), visiting only the upper triangle of z z^T (B8).

    With G = dL/dl, the gradient is (G + G^T) z / tau, and both G_ij and G_ji are functions of the same
    l_ij = l_ji: every block of the upper triangle is computed once per pass and serves both its rows
    and its columns. Pass 1 sums exp over the negatives (S_i); pass 2 scores the positives (loss, and
    U_i = sum_p (1 - p_ip)), pass 3 sends the negatives' gradient. Sorted by class, a row block's
    positives are the rest of its class run and its later negatives are everything after the run.
    """
    n = z.shape[0]
    tiny = torch.finfo(z.dtype).min
    scaled = z * inv_tau
    blocks = _row_blocks(runs, block_size)
    buffer = z.new_empty(min(block_size, n), n)

    # Pass 1: S_i = sum over Neg(i) of exp(l_in), from the blocks (row block, later classes).
    sum_neg = z.new_zeros(n)
    for cls, r0, r1 in blocks:
        c1 = runs[cls][1]
        if c1 == n:
            continue
        exp_block = torch.mm(scaled[r0:r1], z[c1:].T, out=buffer[: r1 - r0, : n - c1]).exp_()
        sum_neg[r0:r1] += exp_block.sum(dim=1)
        sum_neg[c1:] += exp_block.sum(dim=0)
    log_sum_neg = sum_neg.log().clamp_min_(tiny)  # no negative: p_ip = 1 (see _one_pass)

    # Pass 2: the positives, from the blocks (row block, the rest of its class run); the first r1 - r0
    # columns are the diagonal block, where (i, j) and (j, i) are both present and the self is excluded.
    loss = z.new_zeros(())
    grad = torch.zeros_like(z) if need_grad else None
    weight = z.new_zeros(n)  # w_i = 1 / (n |P(i)|)
    sum_one_minus_p = z.new_zeros(n)
    for cls, r0, r1 in blocks:
        c0, c1 = runs[cls]
        if c1 - c0 < 2:
            continue  # a single sample of its class: no positive, L_i = 0
        w = 1.0 / (n * (c1 - c0 - 1))
        weight[r0:r1] = w
        rows = r1 - r0
        logits = torch.mm(scaled[r0:r1], z[r0:c1].T, out=buffer[:rows, : c1 - r0])
        margin_row = logits - log_sum_neg[r0:r1, None]  # log p_ij seen from anchor i (row)
        margin_row.diagonal().fill_(float("inf"))
        margin_col = logits[:, rows:].sub_(log_sum_neg[None, r1:c1])  # log p_ji seen from anchor j
        loss -= w * (F.logsigmoid(margin_row).sum() + F.logsigmoid(margin_col).sum())
        if grad is None:
            continue
        sym = torch.sigmoid(margin_row.neg_())  # 1 - p_ij
        sum_one_minus_p[r0:r1] += sym.sum(dim=1)
        diagonal = sym[:, :rows]
        diagonal += diagonal.T.clone()  # G + G^T inside the diagonal block
        if c1 > r1:
            col = torch.sigmoid(margin_col.neg_())  # 1 - p_ji
            sum_one_minus_p[r1:c1] += col.sum(dim=0)
            sym[:, rows:] += col
        sym *= -w * inv_tau
        grad[r0:r1].addmm_(sym, z[r0:c1])
        if c1 > r1:
            grad[r1:c1].addmm_(sym[:, rows:].T, z[r0:r1])
    if grad is None:
        return loss, None

    # Pass 3: negatives. dL/dl_in = a_i exp(l_in) with a_i = w_i U_i / S_i,
    # so (G + G^T)_in = (a_i + a_n) exp(l_in).
    coef = torch.where(sum_neg > 0, weight * sum_one_minus_p / sum_neg, 0.0) * inv_tau
    for cls, r0, r1 in blocks:
        c1 = runs[cls][1]
        if c1 == n:
            continue
        exp_block = torch.mm(scaled[r0:r1], z[c1:].T, out=buffer[: r1 - r0, : n - c1]).exp_()
        exp_block.mul_(coef[r0:r1, None] + coef[None, c1:])
        grad[r0:r1].addmm_(exp_block, z[c1:])
        grad[c1:].addmm_(exp_block.T, z[r0:r1])
    return loss, grad
