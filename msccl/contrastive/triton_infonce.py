"""Triton kernels of the per-positive InfoNCE (docs/method.md A3): the CUDA path of ``infonce``.

The same loss and gradients as the blockwise path of ``msccl.contrastive.infonce`` (whose docstring
states the formula), computed in three fused kernels that never hold more than a tile of logits:

1. ``_row_stats``: one program per block of anchor rows streams the contrast set in column tiles,
   ``l = <z_i, z_j> / tau`` by ``tl.dot`` (float32 accumulation), and keeps an online log-sum-exp over
   the negatives in float32 (running max and rescaled sum, so any temperature is safe), giving
   ``log S_i``. A second sweep over the block's positive window scores the positives: the loss rows
   ``-w_i sum_p log sigmoid(l_ip - log S_i)`` and ``c_i = w_i sum_p (1 - p_ip)``;
2. ``_anchor_grad``: per row block, ``sum_j G_ij z_j / tau`` with ``G_in = c_i exp(l_in - log S_i)`` on
   the negatives and ``G_ip = -w_i (1 - p_ip)`` on the positives, recomputed tile by tile;
3. ``_contrast_grad``: per contrast column block, ``sum_i G_ij z_i / tau`` (no atomics).

No host synchronisation: both sets are sorted by label on the device, each anchor's positives are the
column window ``[first_i, last_i)`` found by ``searchsorted``, and the kernels read the window bounds
of their block from device memory. ``matmul_precision`` picks the inputs of the tile products, both on
tensor cores: ``tf32`` or ``bf16``; every sum, exp and log stays float32, so nothing overflows. There is no
``highest`` kernel: IEEE float32 ``tl.dot`` has no tensor cores and spilled 4-14 KB of stack per thread,
three-pass TF32 ("tf32x3") needed 262-295 KB of shared memory and spilled too (compiled for sm_90), so
``highest`` runs on the blockwise path (cuBLAS float32). Under ``TRITON_INTERPRET=1`` the kernels run on
CPU tensors (the tests).

``launch_config`` is the one place where tiles, warps and pipeline stages are chosen, and
``kernel_variants`` lists every compiled variant the code can launch: tests/test_triton_compile.py and
benchmarks/triton_compile_report.py compile them ahead of time for sm_80 and sm_90 (no GPU needed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor

from msccl.contrastive.options import MAX_TRITON_DIM

__all__ = ["kernel_variants", "launch_config", "loss_and_grads"]

# tl.dot's input_precision of each matmul_precision; bf16 casts the tiles before the product.
_DOT_PRECISION = {"tf32": "tf32", "bf16": "ieee"}
# Tiles, warps and pipeline stages by the width of the vectors (BLOCK_D), from the resources of the
# compiled kernels (benchmarks/triton_compile_report.py; tests/test_triton_compile.py holds them to the
# chips' limits). The gradient kernels keep a [rows, BLOCK_D] float32 accumulator and a tile of the
# vectors in registers: with 64-row tiles at BLOCK_D = 256 they spilled on sm_80 and needed 196,608 bytes
# of shared memory (an A100 gives a block 166,912; three TF32 stages of _row_stats needed 263,168, over an
# H100's 232,448). 32 x 32 tiles with 8 warps fit both chips without spills, and launch twice as many
# programs (the typical regime has N ~ 1000 samples: 32 row blocks of 32 for 132 SMs).
_WIDE_FROM = 128
_TILES = {"narrow": (64, 64, 4, 2), "wide": (32, 32, 8, 2)}  # block rows, block cols, warps, stages
_FLOAT32_MIN = torch.finfo(torch.float32).min
# TRITON_INTERPRET=1 when this module was imported: the kernels run on CPU tensors (the tests). Read from
# the environment, as Triton does: triton.knobs only exists from Triton 3.4 on.
_INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


def launch_config(
    dim: int, matmul_precision: str, block_rows: int | None = None, block_cols: int | None = None
) -> dict:
    """Compile-time constants and launch options of the kernels for vectors of ``dim`` columns
    (``block_rows`` / ``block_cols``: other tiles than the chosen ones, for tests). ``matmul_precision``
    is tf32 or bf16, the precisions with kernels: ``infonce`` sends no other."""
    if dim > MAX_TRITON_DIM:
        raise ValueError(f"the Triton kernels take vectors of at most {MAX_TRITON_DIM} columns, got {dim}")
    block_d = max(16, triton.next_power_of_2(dim))
    rows, cols, warps, stages = _TILES["wide" if block_d >= _WIDE_FROM else "narrow"]
    return {
        "BF16": matmul_precision == "bf16",
        "PRECISION": _DOT_PRECISION[matmul_precision],
        "BLOCK_M": block_rows or rows,
        "BLOCK_N": block_cols or cols,
        "BLOCK_D": block_d,
        "num_warps": warps,
        "num_stages": stages,
    }


# The widest vectors of each tile choice of launch_config: registers and shared memory only grow with
# BLOCK_D at fixed tiles and warps, so these bound every narrower one.
_WIDEST_PER_TILES = (_WIDE_FROM // 2, MAX_TRITON_DIM)
_INT_POINTERS = {"ya", "yc", "first", "last"}
_SCALARS = {"same": "i32", "n_a": "i32", "n_c": "i32", "dim": "i32", "inv_tau": "fp32", "float32_min": "fp32"}


def kernel_variants() -> Iterator[tuple[str, triton.JITFunction, dict, dict, dict, dict]]:
    """(name, kernel, signature, constexprs, attrs, options) of every variant ``loss_and_grads`` can
    launch (each precision, the widest D of each tile choice), for ``triton.compile(ASTSource(kernel,
    signature, constexprs, attrs), target, options)``. ``attrs`` are the specialisations a launch makes:
    16-byte aligned tensors (fresh torch allocations) and, for D = 256, a width divisible by 16."""
    for precision in _DOT_PRECISION:
        for dim in _WIDEST_PER_TILES:
            config = launch_config(dim, precision)
            options = {key: config.pop(key) for key in ("num_warps", "num_stages")}
            for kernel in (_row_stats, _anchor_grad, _contrast_grad):
                signature = {
                    name: "constexpr"
                    if name in config
                    else _SCALARS.get(name, "*i32" if name in _INT_POINTERS else "*fp32")
                    for name in kernel.arg_names
                }
                aligned = [
                    (i,)
                    for i, name in enumerate(kernel.arg_names)
                    if signature[name].startswith("*") or (name == "dim" and dim % 16 == 0)
                ]
                attrs = {index: [["tt.divisibility", 16]] for index in aligned}
                yield f"{kernel.__name__} {precision} D<={dim}", kernel, signature, config, attrs, options


def loss_and_grads(
    za: Tensor,
    ya: Tensor,
    zc: Tensor | None,
    yc: Tensor | None,
    inv_tau: float,
    needs: tuple[bool, bool],
    matmul_precision: str = "tf32",
    block_rows: int | None = None,
    block_cols: int | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """InfoNCE of normalised float32 ``za`` [Na, D] against ``zc`` (None: against themselves, self excluded).

    Same contract as the blockwise ``_loss_and_grads`` of ``msccl.contrastive.infonce``: the loss and its
    gradients w.r.t. ``za`` and ``zc`` (None where ``needs`` says not needed; with ``zc=None`` the
    anchors' gradient includes their role as contrast samples). ``block_rows`` / ``block_cols`` are the
    tile sizes (powers of two, at least 16: ``tl.dot``'s minimum; default: ``launch_config``'s, not yet
    timed on a GPU).
    """
    constants = launch_config(za.shape[1], matmul_precision, block_rows, block_cols)
    same = zc is None
    need_a, need_c = (needs[0], needs[0]) if same else needs
    n_a = za.shape[0]
    n_c = n_a if same else zc.shape[0]
    if n_a == 0 or n_c == 0:
        # An empty set is a zero term, not a crash (e.g. a scale without a present pair): no anchor leaves
        # nothing to average, and no contrast sample leaves every anchor without a positive (each adds 0).
        zeros_c = None if same or not need_c else torch.zeros_like(zc)
        return za.new_zeros(()), torch.zeros_like(za) if need_a else None, zeros_c

    ya, perm_a = torch.sort(ya.long())
    za = za[perm_a].contiguous()
    if same:
        yc, perm_c, zc = ya, perm_a, za
    else:
        yc, perm_c = torch.sort(yc.long())
        zc = zc[perm_c].contiguous()
    first = torch.searchsorted(yc, ya, side="left")
    last = torch.searchsorted(yc, ya, side="right")
    num_pos = last - first - int(same)
    weight = torch.where(num_pos > 0, 1.0 / (n_a * num_pos.clamp_min(1)).float(), 0.0)
    ya32, yc32 = ya.int(), yc.int()
    first32, last32 = first.int(), last.int()

    dim = za.shape[1]
    sizes = (int(same), n_a, n_c, dim, float(inv_tau))
    log_s = torch.empty(n_a, device=za.device, dtype=torch.float32)
    coef = torch.empty_like(log_s)
    loss_rows = torch.empty_like(log_s)
    row_grid = (triton.cdiv(n_a, constants["BLOCK_M"]),)
    _row_stats[row_grid](
        za, zc, ya32, yc32, first32, last32, weight, log_s, coef, loss_rows, *sizes, _FLOAT32_MIN, **constants
    )
    grad_a = grad_c = None
    if need_a:
        grad_a = torch.empty_like(za)
        _anchor_grad[row_grid](za, zc, ya32, yc32, weight, log_s, coef, grad_a, *sizes, **constants)
    if need_c:
        grad_c = torch.empty_like(zc)
        col_grid = (triton.cdiv(n_c, constants["BLOCK_N"]),)
        _contrast_grad[col_grid](za, zc, ya32, yc32, weight, log_s, coef, grad_c, *sizes, **constants)
    loss = loss_rows.sum()
    if same:
        return loss, None if grad_a is None else _unsort(grad_a + grad_c, perm_a), None
    return loss, _unsort(grad_a, perm_a), _unsort(grad_c, perm_c)


def _unsort(grad: Tensor | None, perm: Tensor) -> Tensor | None:
    return None if grad is None else torch.empty_like(grad).index_copy_(0, perm, grad)


@triton.jit
def _tile(ptr, index, n, dim, BLOCK_D: tl.constexpr, BF16: tl.constexpr):
    """Rows ``index`` of a contiguous [n, dim] float32 matrix, zero-padded to BLOCK_D columns."""
    d = tl.arange(0, BLOCK_D)
    mask = (index[:, None] < n) & (d[None, :] < dim)
    x = tl.load(ptr + index[:, None] * dim + d[None, :], mask=mask, other=0.0)
    if not BF16 and _INTERPRETED:
        # TF32 inputs, rounded as the blockwise path's accuracy model rounds the vectors (to nearest, ties
        # away): the interpreter multiplies in float32 whatever tl.dot's input_precision. On the GPU the
        # tensor cores round, dL/dl included (tested there by benchmarks/triton_gate.py).
        x = ((x.to(tl.uint32, bitcast=True) + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return _operand(x, BF16)


@triton.jit
def _operand(x, BF16: tl.constexpr):
    """A float32 tile as a tl.dot operand: unchanged (TF32: the tensor cores round it), or rounded to
    bfloat16 (matmul_precision bf16)."""
    if BF16:
        # Round to nearest even on the bits (as torch's .to(bfloat16)): the interpreter's cast truncates.
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
        if not _INTERPRETED:
            # Exact now; bfloat16 tiles take the tensor cores. The interpreter's dot reads bfloat16 as its
            # raw uint16 storage, so there the rounded values are multiplied in float32: the same products.
            x = x.to(tl.bfloat16)
    return x


@triton.jit
def _dot(x, y, PRECISION: tl.constexpr):
    """x @ y with float32 accumulation."""
    return tl.dot(x, y, input_precision=PRECISION, out_dtype=tl.float32)


@triton.jit
def _log_sigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _pair_masks(rows, cols, y_rows, y_cols, n_a, n_c, same):
    """(negative, positive) masks of the tile: different labels; same label, not the anchor itself (which
    is column i of row i when ``same``: one set against itself; a run-time flag, not a constexpr, so that
    one compiled kernel serves both terms)."""
    valid = (rows[:, None] < n_a) & (cols[None, :] < n_c)
    same_label = y_rows[:, None] == y_cols[None, :]
    positive = same_label & valid & ((rows[:, None] != cols[None, :]) | (same == 0))
    return (~same_label) & valid, positive


@triton.jit
def _pair_grad(logits, negative, positive, log_s, coef, weight):
    """dL/dl of a tile (rows on axis 0): c_i exp(l_in - log S_i) on negatives, -w_i (1 - p_ip) on positives"""
    margin = logits - log_s[:, None]
    # l_in <= log S_i, so exp(l_in - log S_i) <= 1: the minimum only guards the masked-out entries.
    g_neg = coef[:, None] * tl.exp(tl.minimum(margin, 0.0))
    g_pos = -weight[:, None] / (1.0 + tl.exp(margin))
    return tl.where(negative, g_neg, tl.where(positive, g_pos, 0.0))


@triton.jit(do_not_specialize=["same"])
def _row_stats(
    za, zc, ya, yc, first, last, weight, log_s_out, coef_out, loss_out,
    same, n_a, n_c, dim, inv_tau, float32_min,
    BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """log S_i by an online log-sum-exp over the negatives, then the loss rows and c_i from the positives."""
    r0 = tl.program_id(0) * BLOCK_M
    rows = r0 + tl.arange(0, BLOCK_M)
    a = _tile(za, rows, n_a, dim, BLOCK_D, BF16)
    y_rows = tl.load(ya + rows, mask=rows < n_a, other=-1)
    run_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_M,), tl.float32)
    for c0 in range(0, n_c, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        logits = _dot(a, tl.trans(_tile(zc, cols, n_c, dim, BLOCK_D, BF16)), PRECISION) * inv_tau
        y_cols = tl.load(yc + cols, mask=cols < n_c, other=-1)
        negative, _ = _pair_masks(rows, cols, y_rows, y_cols, n_a, n_c, same)
        logits = tl.where(negative, logits, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # no negative yet: nothing to rescale
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(logits - shift[:, None]), axis=1)
        run_max = new_max
    # No negative at all: log S = -inf, clamped so that p_ip = 1 without inf - inf (as the blockwise path).
    log_s = tl.maximum(run_max + tl.log(run_sum), float32_min)

    # The positives of sorted rows [r0, r1) lie in the columns [first[r0], last[r1 - 1]).
    lo = tl.load(first + r0)
    hi = tl.load(last + tl.minimum(r0 + BLOCK_M, n_a) - 1)
    log_p_sum = tl.zeros((BLOCK_M,), tl.float32)
    one_minus_p_sum = tl.zeros((BLOCK_M,), tl.float32)
    for c0 in range(lo, hi, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        logits = _dot(a, tl.trans(_tile(zc, cols, n_c, dim, BLOCK_D, BF16)), PRECISION) * inv_tau
        y_cols = tl.load(yc + cols, mask=cols < n_c, other=-1)
        _, positive = _pair_masks(rows, cols, y_rows, y_cols, n_a, n_c, same)
        margin = logits - log_s[:, None]
        log_p_sum += tl.sum(tl.where(positive, _log_sigmoid(margin), 0.0), axis=1)
        one_minus_p_sum += tl.sum(tl.where(positive, 1.0 / (1.0 + tl.exp(margin)), 0.0), axis=1)
    w = tl.load(weight + rows, mask=rows < n_a, other=0.0)
    tl.store(log_s_out + rows, log_s, mask=rows < n_a)
    tl.store(coef_out + rows, w * one_minus_p_sum, mask=rows < n_a)
    tl.store(loss_out + rows, -w * log_p_sum, mask=rows < n_a)


@triton.jit(do_not_specialize=["same"])
def _anchor_grad(
    za, zc, ya, yc, weight, log_s, coef, grad_out,
    same, n_a, n_c, dim, inv_tau,
    BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dL/dz_i = sum_j G_ij z_j / tau for a block of anchor rows."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_a
    a = _tile(za, rows, n_a, dim, BLOCK_D, BF16)
    y_rows = tl.load(ya + rows, mask=row_ok, other=-1)
    row_log_s = tl.load(log_s + rows, mask=row_ok, other=0.0)
    row_coef = tl.load(coef + rows, mask=row_ok, other=0.0)
    row_weight = tl.load(weight + rows, mask=row_ok, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for c0 in range(0, n_c, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        c = _tile(zc, cols, n_c, dim, BLOCK_D, BF16)
        logits = _dot(a, tl.trans(c), PRECISION) * inv_tau
        y_cols = tl.load(yc + cols, mask=cols < n_c, other=-1)
        negative, positive = _pair_masks(rows, cols, y_rows, y_cols, n_a, n_c, same)
        g = _pair_grad(logits, negative, positive, row_log_s, row_coef, row_weight)
        acc += _dot(_operand(g, BF16), c, PRECISION)
    d = tl.arange(0, BLOCK_D)
    tl.store(
        grad_out + rows[:, None] * dim + d[None, :], acc * inv_tau, mask=row_ok[:, None] & (d[None, :] < dim)
    )


@triton.jit(do_not_specialize=["same"])
def _contrast_grad(
    za, zc, ya, yc, weight, log_s, coef, grad_out,
    same, n_a, n_c, dim, inv_tau,
    BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dL/dz_j = sum_i G_ij z_i / tau for a block of contrast columns (_anchor_grad's tiles transposed)."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_c
    c = _tile(zc, cols, n_c, dim, BLOCK_D, BF16)
    y_cols = tl.load(yc + cols, mask=col_ok, other=-1)
    acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for r0 in range(0, n_a, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ok = rows < n_a
        a = _tile(za, rows, n_a, dim, BLOCK_D, BF16)
        logits = _dot(a, tl.trans(c), PRECISION) * inv_tau
        y_rows = tl.load(ya + rows, mask=row_ok, other=-1)
        negative, positive = _pair_masks(rows, cols, y_rows, y_cols, n_a, n_c, same)
        row_log_s = tl.load(log_s + rows, mask=row_ok, other=0.0)
        row_coef = tl.load(coef + rows, mask=row_ok, other=0.0)
        row_weight = tl.load(weight + rows, mask=row_ok, other=0.0)
        g = _pair_grad(logits, negative, positive, row_log_s, row_coef, row_weight)
        acc += _dot(_operand(tl.trans(g), BF16), a, PRECISION)
    d = tl.arange(0, BLOCK_D)
    tl.store(
        grad_out + cols[:, None] * dim + d[None, :], acc * inv_tau, mask=col_ok[:, None] & (d[None, :] < dim)
    )
