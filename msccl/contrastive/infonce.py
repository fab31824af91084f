"""The per-positive InfoNCE of docs/method.md A3 for one set of anchors against one contrast set.

For anchor i with positives P(i) and negatives Neg(i) in the contrast set, l_ij = <z_i, z_j> / tau and
S_i = sum_{n in Neg(i)} exp(l_in):

    log p_ip = l_ip - log(exp(l_ip) + S_i) = logsigmoid(l_ip - log S_i)
    L_i      = -(1 / |P(i)|) sum_{p in P(i)} log p_ip          (0 when P(i) is empty)
    loss     = mean of L_i over all anchors

Only the one positive p is in each denominator (this is not SupCon).

How it is computed, so that it stays finite in any input precision and its memory stays bounded:

- float32 with autocast disabled, whatever the input precision (float64 stays float64, for gradcheck);
  log S_i is a log-sum-exp over the negatives;
- anchors are walked in row blocks, so memory is O(block_size x N_contrast), never N x N;
- the loss is a scalar, so its gradient w.r.t. the normalised vectors is computed in the same blocked
  pass as the value, from the same logits, and stored ([N, D]); backward only scales it by the incoming
  gradient. Nothing N x N is stored and no logits are recomputed in backward (double backward is not
  supported);
- both sets are sorted by label, so a block's positives lie in one contiguous column window: label
  masks and the positive-only work touch that window, not the whole row;
- a set against itself (the multi-scale term) visits only the upper triangle of z z^T: each logits
  block serves both its rows and its columns (G + G^T), which needs two matrix products per element
  instead of three.
"""

from __future__ import annotations

import bisect
import importlib.util
import os
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from msccl.contrastive.options import MAX_TRITON_DIM, Kernel, MatmulPrecision, check_option

__all__ = ["VERIFIED_TRITON", "infonce", "triton_available"]

# The matmul_precisions whose Triton kernels passed the correctness gate of benchmarks/gpu_checks.sh
# (Triton against float64 on the GPU, every case PASS) and measured faster than the blockwise path there:
# only these run on Triton under kernel="auto". One entry per precision, recording where it was verified,
#     "tf32": "NVIDIA H100 80GB HBM3, 2027-01-15, torch 2.14.1, triton 3.8.0",
# copied from the "verified" line that gpu_checks.sh prints for a precision whose gate passed and whose
# timings beat blockwise. Empty: no kernel has run on a GPU yet, so "auto" is blockwise everywhere.
VERIFIED_TRITON: dict[str, str] = {}
# The precisions the Triton kernels have (tensor-core inputs); highest always runs blockwise, see
# triton_infonce's docstring for why.
TRITON_PRECISIONS = ("tf32", "bf16")


def infonce(
    anchors: Tensor,
    anchor_labels: Tensor,
    contrast: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    *,
    temperature: float = 0.1,
    block_size: int = 512,
    matmul_precision: MatmulPrecision = "highest",
    kernel: Kernel = "auto",
) -> Tensor:
    """Mean per-positive InfoNCE of ``anchors`` [Na, D] against ``contrast`` [Nc, D] (docs/method.md A3).

    The vectors are L2-normalised here. With ``contrast=None`` the anchors are contrasted with
    themselves and every anchor is excluded from its own positives (the multi-scale term); otherwise
    the two sets are distinct (the cross-scale term) and nothing is excluded. ``block_size`` is the
    number of anchor rows whose logits are held in memory at once. An empty anchor or contrast set
    gives 0 with zero gradients.

    ``matmul_precision`` is the precision of the inputs of the products of normalised vectors:
    ``highest`` (float32), ``tf32`` or ``bf16`` (tensor-core inputs); accumulation, exp and log stay
    float32. The blockwise path rounds the normalised vectors to that precision and multiplies them
    in float32, the same products as tensor cores compute (an accuracy model, not a speed-up on a CPU).
    ``kernel``: ``triton`` (the fused kernels of ``msccl.contrastive.triton_infonce``, float32; needs
    the optional ``triton`` dependency; kernels exist for ``tf32`` and ``bf16`` only, ``highest`` and
    vectors wider than 256 run blockwise), ``blockwise`` (this module), or ``auto``: Triton only for
    CUDA tensors, not float64, when Triton imports and ``matmul_precision`` is in ``VERIFIED_TRITON``
    (none yet), blockwise otherwise. If the Triton kernels fail at run time (import, compile, resources,
    launch), one warning names the cause and the term is computed blockwise, as is every later call with
    that precision in this process: a long run never dies in the loss.
    """
    if (contrast is None) != (contrast_labels is None):
        raise ValueError("give both contrast and contrast_labels, or neither")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    check_option("matmul_precision", matmul_precision, MatmulPrecision)
    check_option("kernel", kernel, Kernel)
    _check_pair(anchors, anchor_labels, "anchors")
    if contrast is not None:
        _check_pair(contrast, contrast_labels, "contrast")
        if contrast.shape[1] != anchors.shape[1]:
            raise ValueError(f"anchors have dimension {anchors.shape[1]} but contrast {contrast.shape[1]}")
    use_triton = _use_triton(kernel, anchors, matmul_precision)
    # float32 math whatever the autocast state or the input precision: up to 10^4 terms of e^(1/tau)
    # overflow a float16 sum.
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        dtype = torch.float64 if anchors.dtype == torch.float64 and not use_triton else torch.float32
        za = F.normalize(anchors.to(dtype), dim=1)
        zc = None if contrast is None else F.normalize(contrast.to(dtype), dim=1)
        grad_on = torch.is_grad_enabled()
        needs = (grad_on and za.requires_grad, grad_on and zc is not None and zc.requires_grad)
        compute = partial(
            _triton_or_blockwise if use_triton else _loss_and_grads, inv_tau=1.0 / temperature,
            block_size=block_size, needs=needs, matmul_precision=matmul_precision,
        )  # fmt: skip
        return _InfoNCE.apply(za, zc, anchor_labels, contrast_labels, compute)


def triton_available() -> bool:
    """Whether the optional Triton dependency imports (the fused kernels of ``triton_infonce``)."""
    return importlib.util.find_spec("triton") is not None


def _use_triton(kernel: Kernel, anchors: Tensor, matmul_precision: MatmulPrecision) -> bool:
    if kernel == "triton" and not triton_available():
        raise ValueError("kernel='triton' needs the optional Triton dependency: pip install 'msccl[triton]'")
    if kernel == "triton" and not anchors.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"kernel='triton' needs CUDA tensors, got {anchors.device} ones: use kernel='auto' or 'blockwise'"
            " (TRITON_INTERPRET=1 runs the kernels on the CPU, slowly, for tests)"
        )
    if (
        kernel == "blockwise"
        or matmul_precision not in TRITON_PRECISIONS
        or anchors.shape[1] > MAX_TRITON_DIM
        or matmul_precision in _TRITON_FAILED  # failed earlier in this process (warned then)
    ):
        return False
    if kernel == "auto":
        return (
            anchors.is_cuda
            and anchors.dtype != torch.float64
            and matmul_precision in VERIFIED_TRITON
            and triton_available()
        )
    return True


# matmul_precision -> the failure of the Triton kernels in this process; those calls run blockwise.
_TRITON_FAILED: dict[str, str] = {}


def _triton_or_blockwise(
    za: Tensor,
    ya: Tensor,
    zc: Tensor | None,
    yc: Tensor | None,
    inv_tau: float,
    block_size: int,
    needs: tuple[bool, bool],
    matmul_precision: MatmulPrecision,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The Triton kernels; on any failure of theirs one warning, then the blockwise path (same contract).

    Out-of-memory is not theirs to absorb (the blockwise path would need memory too) and is raised.
    """
    try:
        from msccl.contrastive import triton_infonce  # the import itself may fail (an old Triton)

        return triton_infonce.loss_and_grads(za, ya, zc, yc, inv_tau, needs, matmul_precision)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # compilation, OutOfResources, launch: anything from the kernels
        cause = f"{type(error).__name__}: {(str(error).strip().splitlines() or ['(no message)'])[0][:300]}"
        _TRITON_FAILED[matmul_precision] = cause
        warnings.warn(
            f"msccl: the Triton InfoNCE kernels failed with matmul_precision={matmul_precision} ({cause}); "
            "this run continues on the blockwise PyTorch path for that precision. Set the contrastive "
            "loss's kernel: blockwise (model.init_args.contrastive.init_args.kernel) to choose it and "
            "silence this warning.",
            RuntimeWarning,
            stacklevel=2,
        )
    return _loss_and_grads(za, ya, zc, yc, inv_tau, block_size, needs, matmul_precision)


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
        compute: Callable[..., tuple[Tensor, Tensor | None, Tensor | None]],
    ) -> Tensor:
        loss, grad_a, grad_c = compute(za, ya, zc, yc)
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
        )


def _loss_and_grads(
    za: Tensor,
    ya: Tensor,
    zc: Tensor | None,
    yc: Tensor | None,
    inv_tau: float,
    block_size: int,
    needs: tuple[bool, bool],
    matmul_precision: MatmulPrecision = "highest",
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-positive InfoNCE of normalised ``za`` against ``zc`` (None: against themselves, self excluded).

    Returns the loss and its gradients w.r.t. ``za`` and ``zc`` (None where not needed; with
    ``zc=None`` the anchors' gradient includes their role as contrast samples).
    """
    za = _ROUNDING[matmul_precision](za)
    zc = None if zc is None else _ROUNDING[matmul_precision](zc)
    same = zc is None
    # With one set, its rows need both their anchor and their contrast gradients.
    need_a, need_c = (needs[0], needs[0]) if same else needs
    n_a = za.shape[0]
    n_c = n_a if same else zc.shape[0]
    if n_a == 0 or n_c == 0:
        # An empty set is a zero term, not a crash (e.g. a scale without a present pair): no anchor leaves
        # nothing to average, and no contrast sample leaves every anchor without a positive (each adds 0).
        zeros_a = torch.zeros_like(za) if need_a else None
        return za.new_zeros(()), zeros_a, None if same or not need_c else torch.zeros_like(zc)

    # Sort both sets by label: the columns sharing an anchor's label are then [first_i, last_i).
    ya, perm_a = torch.sort(ya.long())
    za = za[perm_a]
    if same:
        yc, perm_c, zc = ya, perm_a, za
    else:
        yc, perm_c = torch.sort(yc.long())
        zc = zc[perm_c]
    first = torch.searchsorted(yc, ya, side="left")
    last = torch.searchsorted(yc, ya, side="right")
    # |P(i)| excludes the anchor itself when both sets are the same; anchors without a positive get
    # weight 0 but still count in the mean through the 1 / n_a.
    num_pos = last - first - int(same)
    weight = torch.where(num_pos > 0, 1.0 / (n_a * num_pos.clamp_min(1)).to(za.dtype), 0.0)

    # The one host synchronisation of this term: the sorted labels, to plan the row blocks.
    host = (ya if same else torch.cat([ya, yc])).cpu()
    anchor_runs = _class_runs(host[:n_a])
    contrast_runs = anchor_runs if same else _class_runs(host[n_a:])
    blocks = _row_blocks(anchor_runs, contrast_runs, block_size)

    if same and inv_tau <= _UNSHIFTED_MAX_INV_TAU:
        loss, grad = _intra_symmetric(za, ya, weight, blocks, inv_tau, need_a)
        return loss, _unsort(grad, perm_a), None
    loss, grad_a, grad_c = _one_pass(za, ya, zc, yc, weight, blocks, same, inv_tau, need_a, need_c)
    if same:
        return loss, _unsort(None if grad_a is None else grad_a + grad_c, perm_a), None
    return loss, _unsort(grad_a, perm_a), _unsort(grad_c, perm_c)


def _round_to_tf32(z: Tensor) -> Tensor:
    """Float32 values rounded to TF32's 10-bit mantissa (to nearest, ties away from zero, as cuBLAS)."""
    if z.dtype != torch.float32:
        return _round_to_tf32(z.float()).to(z.dtype)
    bits = z.view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


# The operands of the products of normalised vectors under each matmul_precision.
_ROUNDING: dict[str, Callable[[Tensor], Tensor]] = {
    "highest": lambda z: z,
    "tf32": _round_to_tf32,
    "bf16": lambda z: z.to(torch.bfloat16).to(z.dtype),
}


# Up to this 1/tau, exp(l) with |l| <= 1/tau (unit vectors) can neither overflow nor underflow float32,
# even summed over 10^6 terms (e^60 * 10^6 < 3.4e38 and e^-60 > 1.2e-38): log S_i = log sum exp(l_in)
# is then exact without a max-shift, and one exp of a logits block serves its rows and its columns.
# Smaller temperatures take the max-shifted log-sum-exp of _one_pass, which cannot overflow.
_UNSHIFTED_MAX_INV_TAU = 60.0

# Rows [r0, r1); columns [c0, c1) are those sharing a label with some of these rows; single_class: all rows
# have one label.
Block = tuple[int, int, int, int, bool]


def _class_runs(sorted_labels: Tensor) -> dict[int, tuple[int, int]]:
    """{class: (start, end)} of a sorted label vector on the host."""
    classes, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    ends = counts.cumsum(0).tolist()
    return {c: (e - n, e) for c, n, e in zip(classes.tolist(), counts.tolist(), ends, strict=True)}


def _row_blocks(
    anchor_runs: dict[int, tuple[int, int]], contrast_runs: dict[int, tuple[int, int]], block_size: int
) -> list[Block]:
    """Row blocks of at most block_size rows over the sorted anchors.

    A long class run is cut into chunks of its own: their same-label columns are one window holding no
    negative at all. Short runs are packed whole, several to a block, so that many small classes make
    few blocks (few operations).
    """
    spans: list[list[int]] = []  # [r0, r1, first class, last class]
    for cls, (start, end) in anchor_runs.items():
        if end - start >= block_size:
            spans += [[r0, min(r0 + block_size, end), cls, cls] for r0 in range(start, end, block_size)]
        elif spans and end - spans[-1][0] <= block_size:
            spans[-1][1], spans[-1][3] = end, cls
        else:
            spans.append([start, end, cls, cls])
    classes = list(contrast_runs)  # ascending
    blocks = []
    for r0, r1, first_cls, last_cls in spans:
        lo, hi = bisect.bisect_left(classes, first_cls), bisect.bisect_right(classes, last_cls)
        c0, c1 = (contrast_runs[classes[lo]][0], contrast_runs[classes[hi - 1]][1]) if lo < hi else (0, 0)
        blocks.append((r0, r1, c0, c1, first_cls == last_cls))
    return blocks


def _unsort(grad: Tensor | None, perm: Tensor) -> Tensor | None:
    return None if grad is None else torch.empty_like(grad).index_copy_(0, perm, grad)


def _one_pass(
    za: Tensor,
    ya: Tensor,
    zc: Tensor,
    yc: Tensor,
    weight: Tensor,
    blocks: list[Block],
    same: bool,
    inv_tau: float,
    need_a: bool,
    need_c: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Anchor row blocks against the whole sorted contrast set: value and gradients in one pass.

    With ``same`` the two sets are one and the same sorted set and the anchor itself is excluded.
    """
    n_c = zc.shape[0]
    shifted = inv_tau > _UNSHIFTED_MAX_INV_TAU
    scaled = za * inv_tau
    loss = za.new_zeros(())
    grad_a = torch.zeros_like(za) if need_a else None
    grad_c = torch.zeros_like(zc) if need_c else None
    buffer = za.new_empty(max(r1 - r0 for r0, r1, *_ in blocks), n_c)
    for r0, r1, c0, c1, _ in blocks:
        logits = torch.mm(scaled[r0:r1], zc.T, out=buffer[: r1 - r0])
        window = logits[:, c0:c1]
        same_label = ya[r0:r1, None] == yc[None, c0:c1]
        positive = same_label
        if same:
            positive = same_label.clone()
            positive.diagonal(r0 - c0).fill_(False)  # the anchor itself, at column r0 + i
        # Non-positives get margin +inf: logsigmoid(inf) = 0 and 1 - sigmoid(inf) = 0 drop them below.
        margin = window.masked_fill(~positive, float("inf"))
        window.masked_fill_(same_label, float("-inf"))  # what is left in the row is Neg(i)
        if shifted:
            row_max = logits.amax(dim=1, keepdim=True).nan_to_num_(neginf=0.0)
            logits.sub_(row_max)
        exp_neg = logits.exp_()
        sum_neg = exp_neg.sum(dim=1, keepdim=True)
        log_sum_neg = sum_neg.log()
        if shifted:
            log_sum_neg += row_max
        # No negative at all: log S = -inf, clamped so that p_ip = 1 without inf - inf.
        margin.sub_(log_sum_neg.clamp_min_(torch.finfo(za.dtype).min))  # log p_ip = logsigmoid(margin)
        w = weight[r0:r1, None]
        loss -= (w * F.logsigmoid(margin)).sum()
        if grad_a is None and grad_c is None:
            continue
        # dL/dl_ip = -w_i (1 - p_ip);  dL/dl_in = w_i sum_p (1 - p_ip) exp(l_in) / S_i;  l = <za, zc> / tau.
        one_minus_p = torch.sigmoid(margin.neg_())
        coef = torch.where(sum_neg > 0, w * one_minus_p.sum(dim=1, keepdim=True) / sum_neg, 0.0)
        grad_logits = exp_neg.mul_(coef * inv_tau)
        grad_logits[:, c0:c1].sub_(one_minus_p.mul_(w * inv_tau))
        if grad_a is not None:
            torch.mm(grad_logits, zc, out=grad_a[r0:r1])
        if grad_c is not None:
            grad_c.addmm_(grad_logits.T, za[r0:r1])
    return loss, grad_a, grad_c


def _intra_symmetric(
    z: Tensor, y: Tensor, weight: Tensor, blocks: list[Block], inv_tau: float, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """A sorted set against itself (the multi-scale term), visiting only the upper triangle of z z^T.

    With G = dL/dl the gradient is (G + G^T) z / tau, and G_ij, G_ji are both functions of l_ij = l_ji:
    the block (rows [r0, r1), columns [r0, n)) of the upper triangle serves its rows and, for columns
    past r1, its columns too; inside the diagonal block (columns [r0, r1)) both orders are present.
    Pass 1 sums exp over the negatives (S_i); pass 2 scores the positives, all in the columns
    [r0, c1) where c1 ends the class of the block's last row (loss, U_i = sum_p (1 - p_ip)); pass 3
    sends the negatives' gradient, dL/dl_in = a_i exp(l_in) with a_i = w_i U_i / S_i. Passes 1 and 3
    skip the same-label window of single-class blocks, pass 2 visits nothing but that window.
    """
    n = z.shape[0]
    scaled = z * inv_tau
    buffer = z.new_empty(max(r1 - r0 for r0, r1, *_ in blocks), n)

    def exp_negatives(r0: int, r1: int, c1: int, single_class: bool) -> tuple[int, Tensor]:
        """(s, exp(l)) of rows [r0, r1) and columns [s, n), zero where the labels agree (self included).

        For a single-class block every column before c1 shares its label: the negatives start at c1.
        """
        s = c1 if single_class else r0
        exp_block = torch.mm(scaled[r0:r1], z[s:].T, out=buffer[: r1 - r0, : n - s]).exp_()
        exp_block[:, : c1 - s].masked_fill_(y[r0:r1, None] == y[None, s:c1], 0.0)
        return s, exp_block

    sum_neg = z.new_zeros(n)
    for r0, r1, _, c1, single_class in blocks:
        s, exp_block = exp_negatives(r0, r1, c1, single_class)
        sum_neg[r0:r1] += exp_block.sum(dim=1)
        past = max(s, r1)  # columns past the diagonal block also get their (column) share
        sum_neg[past:] += exp_block[:, past - s :].sum(dim=0)
    log_sum_neg = sum_neg.log().clamp_min_(torch.finfo(z.dtype).min)  # no negative: p_ip = 1

    loss = z.new_zeros(())
    grad = torch.zeros_like(z) if need_grad else None
    sum_one_minus_p = z.new_zeros(n)
    for r0, r1, _, c1, _ in blocks:
        rows = r1 - r0
        logits = torch.mm(scaled[r0:r1], z[r0:c1].T, out=buffer[:rows, : c1 - r0])
        not_positive = y[r0:r1, None] != y[None, r0:c1]
        not_positive[:, :rows].fill_diagonal_(True)  # the anchor itself
        # margins log p_ij seen from the row anchor i, and (past the diagonal block) from the column j
        margin_row = logits.masked_fill(not_positive, float("inf")).sub_(log_sum_neg[r0:r1, None])
        margin_col = logits[:, rows:].masked_fill_(not_positive[:, rows:], float("inf"))
        margin_col.sub_(log_sum_neg[None, r1:c1])
        w_row, w_col = weight[r0:r1, None], weight[None, r1:c1]
        loss -= (w_row * F.logsigmoid(margin_row)).sum() + (w_col * F.logsigmoid(margin_col)).sum()
        if grad is None:
            continue
        sym = torch.sigmoid(margin_row.neg_())  # 1 - p_ij
        sum_one_minus_p[r0:r1] += sym.sum(dim=1)
        sym.mul_(w_row)
        diagonal = sym[:, :rows]
        diagonal += diagonal.T.clone()  # G + G^T inside the diagonal block
        col = torch.sigmoid(margin_col.neg_())  # 1 - p_ji
        sum_one_minus_p[r1:c1] += col.sum(dim=0)
        sym[:, rows:] += col.mul_(w_col)
        sym *= -inv_tau
        grad[r0:r1].addmm_(sym, z[r0:c1])
        grad[r1:c1].addmm_(sym[:, rows:].T, z[r0:r1])
    if grad is None:
        return loss, None

    coef = torch.where(sum_neg > 0, weight * sum_one_minus_p / sum_neg, 0.0) * inv_tau
    for r0, r1, _, c1, single_class in blocks:
        s, exp_block = exp_negatives(r0, r1, c1, single_class)
        exp_block.mul_(coef[r0:r1, None] + coef[None, s:])  # (G + G^T)_in = (a_i + a_n) exp(l_in)
        grad[r0:r1].addmm_(exp_block, z[s:])
        past = max(s, r1)
        grad[past:].addmm_(exp_block[:, past - s :].T, z[r0:r1])
    return loss, grad
