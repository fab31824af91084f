"""Every Triton InfoNCE kernel variant compiles for the real chips, fits their shared memory, barely spills.

``triton.compile`` for ``GPUTarget("cuda", 80 | 90, 32)`` runs on a CPU (Triton ships ptxas and
cuobjdump), so CI checks what used to be found only at launch on a GPU: three pipeline stages of the TF32
``_row_stats`` needed 263,168 bytes of shared memory where an H100 gives a block 232,448, and the 64-row
gradient tiles at D = 256 spilled on sm_80. The variants are those ``loss_and_grads`` can launch
(``triton_infonce.kernel_variants``); benchmarks/triton_compile_report.py prints the same table.

Compiling all 24 took 31 s on the 2-core development machine (up to two minutes when other jobs load
it). Results go to Triton's own cache (``TRITON_CACHE_DIR``, default ~/.triton/cache), keyed by the
kernel source, constants, specialisations, options, target and Triton version, so a later run reads
exactly the binaries a fresh compile would give and takes seconds.
"""

from __future__ import annotations

import pytest

from msccl.contrastive.infonce import triton_available
from tests.test_benchmarks import load_benchmark

pytestmark = pytest.mark.skipif(
    not triton_available(), reason="the optional triton dependency is not installed"
)


@pytest.fixture(scope="module")
def report():
    module = load_benchmark("triton_compile_report")
    if module.cuobjdump() is None:
        pytest.skip("this Triton has no NVIDIA backend binaries (ptxas, cuobjdump) to compile with")
    return module


@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 80])
def test_every_kernel_variant_compiles_fits_shared_memory_and_does_not_spill(report, arch):
    from msccl.contrastive.triton_infonce import kernel_variants

    compiled = report.compile_all([arch])
    names = {name for name, *_ in kernel_variants()}
    assert {c.name for c in compiled} == names and len(names) == 12  # 3 kernels x 2 precisions x 2 tiles
    for c in compiled:
        assert c.shared <= report.SHARED_LIMIT[arch], f"{c.name} needs {c.shared} bytes of shared memory"
        assert c.stack <= report.MAX_STACK_BYTES, f"{c.name} spills {c.stack} bytes of stack per thread"
        assert 0 < c.registers <= 255
