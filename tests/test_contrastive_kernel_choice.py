"""Which kernel computes the InfoNCE (msccl/contrastive/infonce.py), and the fallback when Triton fails.

``auto`` takes the Triton kernels only for a precision recorded in ``VERIFIED_TRITON``; any failure of
the kernels at run time (import, compile, resources, launch) warns once and the term is computed on the
blockwise path, which must give the same loss and gradients as asking for blockwise directly. These
tests run on the CPU and never import triton: the kernels' module is replaced by one that fails.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from types import ModuleType, SimpleNamespace

import pytest
import torch

import msccl.contrastive
from msccl.contrastive import MSCSContrastiveLoss, infonce

infonce_module = importlib.import_module("msccl.contrastive.infonce")


@pytest.fixture
def failing_kernels(monkeypatch):
    """The Triton module's entry raises like a kernel that needs too much shared memory; CPU tensors are
    let through the CUDA check as under the interpreter. Yields the number of calls to the kernels."""
    calls = []

    def loss_and_grads(*args, **kwargs):
        calls.append(1)
        raise RuntimeError(
            "OutOfResources: out of resource: shared memory, Required: 263168, Hardware limit: 232448"
        )

    fake = ModuleType("msccl.contrastive.triton_infonce")
    fake.loss_and_grads = loss_and_grads
    monkeypatch.setitem(sys.modules, "msccl.contrastive.triton_infonce", fake)
    monkeypatch.setattr(msccl.contrastive, "triton_infonce", fake, raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(infonce_module, "triton_available", lambda: True)
    monkeypatch.setattr(infonce_module, "_TRITON_FAILED", {})
    return calls


def sample_set(seed: int, n: int = 30, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, requires_grad=True), torch.randint(0, 3, (n,), generator=g)


def test_a_failing_kernel_warns_once_and_the_blockwise_path_gives_the_loss(failing_kernels):
    z, y = sample_set(0)
    zc, yc = sample_set(1)
    with pytest.warns(RuntimeWarning, match=r"OutOfResources.*kernel: blockwise") as caught:
        got = infonce(z, y, zc, yc, matmul_precision="tf32", kernel="triton")
        again = infonce(z, y, matmul_precision="tf32", kernel="triton")  # later calls: straight to blockwise
    assert len([w for w in caught if "Triton InfoNCE kernels failed" in str(w.message)]) == 1
    assert len(failing_kernels) == 1
    expected = infonce(z, y, zc, yc, matmul_precision="tf32", kernel="blockwise")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        again, infonce(z, y, matmul_precision="tf32", kernel="blockwise"), rtol=0, atol=0
    )
    grads = torch.autograd.grad(got, (z, zc))
    for grad, want in zip(grads, torch.autograd.grad(expected, (z, zc)), strict=True):
        torch.testing.assert_close(grad, want, rtol=0, atol=0)


def test_a_triton_that_does_not_import_falls_back_too(failing_kernels, monkeypatch):
    monkeypatch.setitem(sys.modules, "msccl.contrastive.triton_infonce", None)  # import raises ImportError
    monkeypatch.delattr(msccl.contrastive, "triton_infonce")
    z, y = sample_set(2)
    with pytest.warns(RuntimeWarning, match="(ModuleNotFound|Import)Error"):
        got = infonce(z, y, matmul_precision="bf16", kernel="triton")
    torch.testing.assert_close(got, infonce(z, y, matmul_precision="bf16", kernel="blockwise"))


def test_the_whole_loss_survives_a_failing_kernel(failing_kernels):
    g = torch.Generator().manual_seed(3)
    features = [
        torch.randn(2, 8, 8, 8, generator=g, requires_grad=True),
        torch.randn(2, 8, 4, 4, generator=g),
    ]
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    triton_fn = MSCSContrastiveLoss(
        num_classes=3, min_views_per_class=1, matmul_precision="tf32", kernel="triton"
    )
    with pytest.warns(RuntimeWarning, match="continues on the blockwise PyTorch path"):
        loss, _ = triton_fn(features, labels, generator=torch.Generator().manual_seed(0))
    blockwise_fn = MSCSContrastiveLoss(
        num_classes=3, min_views_per_class=1, matmul_precision="tf32", kernel="blockwise"
    )
    expected, _ = blockwise_fn(features, labels, generator=torch.Generator().manual_seed(0))
    assert loss > 0
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_auto_takes_triton_only_for_a_verified_precision(monkeypatch):
    monkeypatch.setattr(infonce_module, "triton_available", lambda: True)
    monkeypatch.setattr(infonce_module, "_TRITON_FAILED", {})
    cuda_like = SimpleNamespace(is_cuda=True, dtype=torch.float32, shape=(100, 256))
    use = infonce_module._use_triton
    assert not any(use("auto", cuda_like, p) for p in ("highest", "tf32", "bf16"))  # nothing verified
    monkeypatch.setitem(infonce_module.VERIFIED_TRITON, "bf16", "test GPU, 2027-01-01, torch x, triton y")
    assert use("auto", cuda_like, "bf16") and not use("auto", cuda_like, "tf32")
    assert not use("auto", SimpleNamespace(is_cuda=False, dtype=torch.float32, shape=(100, 256)), "bf16")
    assert not use("auto", SimpleNamespace(is_cuda=True, dtype=torch.float32, shape=(100, 512)), "bf16")
    # highest has no Triton kernel (IEEE float32 tl.dot spills; docs/contrastive-loss.md): always blockwise
    assert not use("triton", cuda_like, "highest") and use("triton", cuda_like, "tf32")
    monkeypatch.setitem(infonce_module._TRITON_FAILED, "bf16", "RuntimeError: earlier failure")
    assert not use("auto", cuda_like, "bf16") and not use("triton", cuda_like, "bf16")


def test_importing_the_loss_does_not_import_triton():
    code = "import sys, msccl.contrastive; assert 'triton' not in sys.modules, 'triton imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
