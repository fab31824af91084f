"""The per-positive InfoNCE (docs/method.md A3) against the loop reference, gradcheck, row blocks and
precision: autocast, matmul_precision.
"""

from __future__ import annotations

import pytest
import torch
from contrastive_reference import reference_infonce

from msccl.contrastive import infonce

# tau 0.1 takes the unshifted paths (the symmetric one for a set against itself); tau 0.01 (1/tau > 60)
# takes the shifted log-sum-exp path; both must give the same numbers.
TEMPERATURES = [0.1, 0.01]


def make_set(n: int, dim: int, num_classes: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, dim, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return vectors, labels


def value_and_grads(fn, tensors):
    value = fn(*tensors)
    return value.detach(), torch.autograd.grad(value, tensors)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("block_size", [1, 5, 512])
def test_intra_set_matches_reference(temperature, block_size):
    z, y = make_set(23, 5, 4, seed=0)
    got, (g_got,) = value_and_grads(
        lambda t: infonce(t, y, temperature=temperature, block_size=block_size), [z]
    )
    ref, (g_ref,) = value_and_grads(lambda t: reference_infonce(t, y, None, None, temperature), [z])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("block_size", [1, 4, 512])
def test_cross_sets_match_reference(temperature, block_size):
    za, ya = make_set(17, 5, 4, seed=1)
    zc, yc = make_set(11, 5, 5, seed=2)  # class 4 only in the contrast set; some anchors lack positives
    ya[0] = 6  # an anchor class absent from the contrast set: no positive, counts in the mean
    got, g_got = value_and_grads(
        lambda a, c: infonce(a, ya, c, yc, temperature=temperature, block_size=block_size), [za, zc]
    )
    ref, g_ref = value_and_grads(lambda a, c: reference_infonce(a, ya, c, yc, temperature), [za, zc])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_every_row_block_plan_matches_reference():
    # Class runs of very different lengths, so that block sizes 1..10 give every kind of block: chunks
    # of a long run, several short runs packed together, a short run packed after a chunk.
    g = torch.Generator().manual_seed(11)
    y = torch.repeat_interleave(torch.arange(5), torch.tensor([1, 2, 7, 3, 9]))[
        torch.randperm(22, generator=g)
    ]
    z = torch.randn(22, 4, generator=g, dtype=torch.float64, requires_grad=True)
    zc = torch.randn(15, 4, generator=g, dtype=torch.float64, requires_grad=True)
    yc = torch.repeat_interleave(torch.tensor([0, 2, 3, 4, 6]), torch.tensor([3, 1, 6, 4, 1]))
    ref_same, g_same = value_and_grads(lambda t: reference_infonce(t, y, None, None, 0.1), [z])
    ref_cross, g_cross = value_and_grads(lambda a, c: reference_infonce(a, y, c, yc, 0.1), [z, zc])
    for block_size in range(1, 11):
        got, g_got = value_and_grads(lambda t, bs=block_size: infonce(t, y, block_size=bs), [z])
        torch.testing.assert_close(got, ref_same, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_got[0], g_same[0], rtol=1e-10, atol=1e-12)
        got, g_got = value_and_grads(lambda a, c, bs=block_size: infonce(a, y, c, yc, block_size=bs), [z, zc])
        torch.testing.assert_close(got, ref_cross, rtol=1e-12, atol=1e-12)
        for a, b in zip(g_got, g_cross, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_only_one_positive_is_in_each_denominator():
    # Two anchors of class 0 identical to each other and one negative: the per-positive InfoNCE gives
    # log p = l - log(e^l + e^l_n) for the single positive; SupCon would put both terms in the softmax.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    tau = 0.5
    # anchors 0 and 1: l_pos = 2, l_neg = 0; anchor 2 has no positive (contributes 0, counted in the mean)
    expected = 2 * -(2 - torch.log(torch.exp(torch.tensor(2.0)) + 1)) / 3
    torch.testing.assert_close(infonce(z, y, temperature=tau), expected.double())


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_gradcheck(temperature):
    za, ya = make_set(8, 3, 3, seed=3)
    zc, yc = make_set(6, 3, 3, seed=4)
    assert torch.autograd.gradcheck(lambda a: infonce(a, ya, temperature=temperature, block_size=4), (za,))
    assert torch.autograd.gradcheck(
        lambda a, c: infonce(a, ya, c, yc, temperature=temperature, block_size=4), (za, zc)
    )


def test_edge_cases_give_zero_with_zero_gradients():
    z, _ = make_set(6, 3, 1, seed=5)
    cases = {
        "one class only (no negatives)": lambda t: infonce(t, torch.zeros(6, dtype=torch.long)),
        "every class a singleton (no positives)": lambda t: infonce(t, torch.arange(6)),
        "empty anchors": lambda t: infonce(t[:0], torch.zeros(0, dtype=torch.long)),
        "empty contrast": lambda t: infonce(t, torch.zeros(6, dtype=torch.long), t[:0], torch.zeros(0)),
        "no shared class": lambda t: infonce(t[:3], torch.zeros(3), t[3:], torch.ones(3)),
    }
    for name, fn in cases.items():
        value = fn(z)
        (grad,) = torch.autograd.grad(value, z)
        assert value.item() == 0.0, name
        assert torch.all(grad == 0), name


def test_anchor_without_positive_counts_in_the_mean():
    z, _ = make_set(8, 3, 2, seed=6)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2])  # the class-2 anchor has no positive
    value = infonce(z, y).item()
    reference = reference_infonce(z, y, None, None, 0.1).item()  # sum of L_i over 8 anchors / 8
    assert value == pytest.approx(reference, rel=1e-12)
    assert value != pytest.approx(reference * 8 / 7)  # not the mean over anchors with positives only


@pytest.mark.parametrize("same", [True, False])
def test_row_blocks_give_the_same_loss_and_gradient_as_one_block(same):
    za, ya = make_set(150, 16, 6, seed=7, dtype=torch.float32)
    zc, yc = (None, None) if same else make_set(100, 16, 6, seed=8, dtype=torch.float32)
    tensors = [za] if same else [za, zc]

    def run(block_size):
        return value_and_grads(lambda *t: infonce(t[0], ya, *t[1:], yc, block_size=block_size), tensors)

    whole, g_whole = run(10**6)
    for block_size in (1, 16):
        chunked, g_chunked = run(block_size)
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
        for a, b in zip(g_chunked, g_whole, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_no_grad_and_input_validation():
    z, y = make_set(5, 3, 2, seed=9)
    with torch.no_grad():
        assert torch.isfinite(infonce(z, y))
    with pytest.raises(ValueError, match="both"):
        infonce(z, y, z)
    with pytest.raises(ValueError, match="temperature"):
        infonce(z, y, temperature=0.0)
    with pytest.raises(ValueError, match="labels"):
        infonce(z, y[:3])
    with pytest.raises(ValueError, match="dimension"):
        infonce(z, y, z[:, :2], y)


def test_infonce_refuses_an_unknown_kernel_or_precision():
    z, y = make_set(4, 3, 2, seed=6)
    with pytest.raises(ValueError, match="kernel must be one of auto, blockwise, triton, got 'cuda'"):
        infonce(z, y, kernel="cuda")
    with pytest.raises(ValueError, match="matmul_precision must be one of highest, tf32, bf16, got 'fp8'"):
        infonce(z, y, matmul_precision="fp8")


# ---------------------------------------------------------------- precision: float32 math for any input


def overflow_case(dtype):
    """Many negatives at logit 10 (identical unit vectors, two labels): sum exp = 6 * e^10 > fp16 max."""
    z = torch.ones(12, 4, dtype=dtype)
    y = torch.tensor([0, 1] * 6)
    return z, y


def test_overflow_case_really_overflows_naive_fp16():
    z, y = overflow_case(torch.float16)
    zn = torch.nn.functional.normalize(z, dim=1)
    logits = zn @ zn.T / 0.1
    naive_negative_sum = (torch.exp(logits) * (y[:, None] != y[None, :])).sum(1)
    assert torch.isinf(naive_negative_sum).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_and_autocast_stay_finite_and_match_float32(dtype):
    z32, y = overflow_case(torch.float32)
    reference = infonce(z32, y)
    expected = torch.log(torch.tensor(7.0))  # each positive against 6 equal negatives: -log(1 / 7)
    torch.testing.assert_close(reference, expected)
    low = z32.to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        value = infonce(low, y)
        value_cross = infonce(low, y, low, y)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(low.grad).all()
    torch.testing.assert_close(value, reference)
    assert torch.isfinite(value_cross)

    # random vectors produced in low precision under autocast: close to the float32 result
    za, ya = make_set(40, 8, 3, seed=10, dtype=torch.float32)
    weight = torch.randn(8, 8)
    exact = infonce(za @ weight, ya)
    with torch.autocast("cpu", dtype=dtype):
        projected = za @ weight
        assert projected.dtype == dtype
        approx = infonce(projected, ya)
    assert approx.dtype == torch.float32
    torch.testing.assert_close(approx, exact, rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------- matmul_precision (issue 13)


def clustered_set(n: int, dim: int, num_classes: int, seed: int):
    """Embeddings around one random direction per class: logits spread like a trained network's."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    centres = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    return (centres[labels] + 0.7 * torch.randn(n, dim, generator=g, dtype=torch.float64)), labels


@pytest.mark.parametrize(("precision", "rel", "cosine"), [("tf32", 1e-4, 0.9999), ("bf16", 1e-3, 0.999)])
def test_reduced_matmul_precision_stays_within_the_targets(precision, rel, cosine):
    # issue 13's targets at bf16 (1e-3, 0.999); TF32 keeps 3 more mantissa bits. 256-d as the paper's heads.
    za, ya = clustered_set(120, 256, 5, seed=12)
    zc, yc = clustered_set(80, 256, 5, seed=13)
    leaves = [za.requires_grad_(), zc.requires_grad_()]
    exact, g_exact = value_and_grads(lambda a, c: infonce(a, ya, c, yc), leaves)
    low = [t.detach().float().requires_grad_() for t in leaves]
    approx, g_approx = value_and_grads(lambda a, c: infonce(a, ya, c, yc, matmul_precision=precision), low)
    assert 0 < abs(approx.double() / exact - 1) <= rel  # rounded, yet within the target
    for a, b in zip(g_approx, g_exact, strict=True):
        assert torch.nn.functional.cosine_similarity(a.double().flatten(), b.flatten(), dim=0) >= cosine


def test_auto_precision_is_bf16_only_for_bf16_embeddings():
    from msccl.contrastive import MSCSContrastiveLoss

    features = [torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(14))]
    labels = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(15))

    def loss(precision, dtype):
        fn = MSCSContrastiveLoss(num_classes=3, min_views_per_class=1, matmul_precision=precision)
        return fn([f.to(dtype) for f in features], labels, generator=torch.Generator().manual_seed(0))[0]

    assert loss("auto", torch.bfloat16) == loss("bf16", torch.bfloat16) != loss("highest", torch.bfloat16)
    assert loss("auto", torch.float32) == loss("highest", torch.float32) != loss("bf16", torch.float32)
