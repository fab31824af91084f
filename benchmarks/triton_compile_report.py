"""Compile every Triton InfoNCE kernel variant for sm_80 (A100) and sm_90 (H100) on the CPU: resources.

``triton.compile`` for a ``GPUTarget`` needs no GPU. For each variant that ``loss_and_grads`` can launch
(``msccl.contrastive.triton_infonce.kernel_variants``) it prints the shared memory a block needs, the
registers per thread and the stack bytes per thread (register spills; read from the cubin by the
``cuobjdump`` that Triton ships), against the chip's limits. tests/test_triton_compile.py asserts the
same table. Compiled kernels go to Triton's cache (``TRITON_CACHE_DIR``, default ~/.triton/cache), whose
key is the kernel's source, constants, options, target and Triton version: a cached entry is what a fresh
compile gives.

    .venv/bin/python benchmarks/triton_compile_report.py [--archs 90 80]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Shared memory a block may opt in to, per compute capability (CUDA programming guide, "Technical
# Specifications per Compute Capability"): 227 KB on sm_90 (H100), 163 KB on sm_80 (A100).
SHARED_LIMIT = {90: 232_448, 80: 166_912}
# Stack bytes per thread tolerated: a few spilled registers (up to 32 words) cost a few L1 hits per tile,
# which the tile products hide; the spills this bound catches (4-14 KB under IEEE float32 tl.dot) go to
# local memory in every iteration of the column loop.
MAX_STACK_BYTES = 128


@dataclass(frozen=True)
class Compiled:
    name: str
    arch: int
    shared: int
    registers: int
    stack: int
    seconds: float

    @property
    def fits(self) -> bool:
        return self.shared <= SHARED_LIMIT[self.arch] and self.stack <= MAX_STACK_BYTES


def cuobjdump() -> Path | None:
    """Triton's bundled cuobjdump (None when this Triton has no NVIDIA backend binaries)."""
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return path if path.exists() else None


def compile_all(archs: list[int], report=None) -> list[Compiled]:
    """Compile every variant for every arch; ``report(Compiled)`` is called as each one finishes."""
    sys.path.insert(0, str(ROOT))
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from msccl.contrastive.triton_infonce import kernel_variants

    tool = cuobjdump()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        for arch in archs:
            for name, kernel, signature, constexprs, attrs, options in kernel_variants():
                start = time.perf_counter()
                source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
                compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
                cubin.write_bytes(compiled.asm["cubin"])
                usage = subprocess.run(
                    [str(tool), "-res-usage", str(cubin)], capture_output=True, text=True, check=True
                ).stdout
                registers, stack = (int(v) for v in re.search(r"REG:(\d+) STACK:(\d+)", usage).groups())
                result = Compiled(
                    name, arch, compiled.metadata.shared, registers, stack, time.perf_counter() - start
                )
                results.append(result)
                if report:
                    report(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", type=int, default=[90, 80], choices=sorted(SHARED_LIMIT))
    args = parser.parse_args()
    if cuobjdump() is None:
        sys.exit("triton_compile_report.py: this Triton has no NVIDIA backend binaries (ptxas, cuobjdump)")
    import triton

    print(
        f"triton {triton.__version__}; shared limit per block: sm_90 {SHARED_LIMIT[90]}, sm_80 "
        f"{SHARED_LIMIT[80]} bytes; stack (spills) allowed: {MAX_STACK_BYTES} bytes per thread\n"
    )
    print("| variant | sm | shared (bytes) | registers | stack (bytes) | fits | compile (s) |")
    print("|---|---:|---:|---:|---:|---|---:|")
    results = compile_all(
        args.archs,
        lambda r: print(
            f"| {r.name} | {r.arch} | {r.shared} | {r.registers} | {r.stack} | "
            f"{'yes' if r.fits else '**no**'} | {r.seconds:.1f} |",
            flush=True,
        ),
    )
    if not all(r.fits for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
