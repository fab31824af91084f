"""Correctness gate, then timings, of the Triton InfoNCE kernels on a CUDA GPU (benchmarks/gpu_checks.sh).

Needs torch and Triton only (no Lightning, no data libraries). Every row is printed as it is measured.

1. Gate: ``triton_infonce.loss_and_grads`` against the float64 blockwise loss on the GPU, for each
   precision (tf32, bf16), same-set and cross-set terms, D 256 and 40, N 1 / 17 / 810 / 10000,
   temperature 0.1 and 0.01; then ``MSCSContrastiveLoss`` with ``kernel="triton"`` against the float64
   loss on the samples of benchmarks/contrastive_loss.py (typical and cap-bound regimes). A case PASSes
   when the kernels are finite and no less accurate than the blockwise path's accuracy model of the
   same precision (loss error at most 2x its error + 1e-6, gradient 1 - cosine at most 2x its + 1e-6);
   FAIL otherwise; ERROR when they raise. The first call of a (precision, D) pair includes compiling:
   its seconds are given. Registers and spills per variant: benchmarks/triton_compile_report.py.
2. Timings, only of what passed: the whole loss (sampling, every term, backward) with the kernels and
   blockwise: CUDA events, after warm-up, median and IQR of ``--repeats`` steps.
3. One ``verified:`` line per precision whose gate passed and whose kernels beat blockwise in both
   regimes: what to record in ``VERIFIED_TRITON`` (msccl/contrastive/infonce.py) for ``kernel="auto"``.
4. Last (its first call compiles for a minute or more): the blockwise loss with its terms under
   ``torch.compile(dynamic=True)`` (inductor writes and tunes its own Triton for the chip), checked
   against eager on the same samples, then timed. Keep the hand kernels only where they beat it.

    python benchmarks/triton_gate.py [--repeats 20]
    python benchmarks/triton_gate.py --cpu-smoke     # the same code on the CPU (interpreter), toy sizes
"""

from __future__ import annotations

import os
import sys

if "--cpu-smoke" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from contrastive_loss import loss_and_grads  # noqa: E402

from msccl.contrastive import MSCSContrastiveLoss  # noqa: E402
from msccl.contrastive.infonce import _loss_and_grads  # noqa: E402

PRECISIONS = ("tf32", "bf16")
CLASSES = 19


@dataclasses.dataclass(frozen=True)
class Sizes:
    dims: tuple[int, ...]
    counts: tuple[int, ...]
    temperatures: tuple[float, ...]


FULL = Sizes(dims=(256, 40), counts=(1, 17, 810, 10000), temperatures=(0.1, 0.01))
SMOKE = Sizes(dims=(40,), counts=(1, 17), temperatures=(0.1, 0.01))


def errors(loss, grads, exact, exact_grads) -> tuple[float, float]:
    """(relative loss error, 1 - gradient cosine) against float64; absolute error / max |g| without a loss."""
    loss, exact = float(loss.detach()), float(exact.detach())
    rel = abs(loss - exact) / abs(exact) if exact else abs(loss - exact)
    got = torch.cat([g.double().flatten() for g in grads])
    want = torch.cat([g.double().flatten() for g in exact_grads])
    if want.abs().max() == 0:
        return rel, float(got.abs().max()) if got.numel() else 0.0
    return rel, 1 - float(F.cosine_similarity(got, want, dim=0))


def verdict(got: tuple[float, float], model: tuple[float, float]) -> str:
    finite = all(v == v and abs(v) != float("inf") for v in got)
    within = all(g <= 2 * m + 1e-6 for g, m in zip(got, model, strict=True))
    return "PASS" if finite and within else "FAIL"


def gate_kernels(sizes: Sizes, device: str, passed: dict[str, bool]) -> None:
    from msccl.contrastive import triton_infonce

    print(
        "\n| precision | term | D | N | tau | result | loss rel. error | 1 - grad cosine | model error | s |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    compiled: set[tuple[str, int]] = set()
    for precision in PRECISIONS:
        for dim in sizes.dims:
            for n in sizes.counts:
                for term in ("same", "cross"):
                    for tau in sizes.temperatures:
                        g = torch.Generator().manual_seed(n + dim)
                        za = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
                        ya = torch.randint(0, CLASSES, (n,), generator=g)
                        zc = yc = None
                        if term == "cross":
                            zc = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
                            yc = torch.randint(0, CLASSES, (n,), generator=g)
                        za, ya = za.to(device), ya.to(device)
                        zc, yc = (None, None) if zc is None else (zc.to(device), yc.to(device))
                        args = (ya, None if zc is None else zc.float(), yc, 1 / tau, (True, True))
                        exact = _loss_and_grads(za, ya, zc, yc, 1 / tau, 512, (True, True), "highest")
                        model = _loss_and_grads(za.float(), *args[:4], 512, args[4], precision)
                        start = time.perf_counter()
                        try:
                            got = triton_infonce.loss_and_grads(za.float(), *args, precision)
                            if device == "cuda":
                                torch.cuda.synchronize()
                            seconds = time.perf_counter() - start
                            grads = [x for x in got[1:] if x is not None]
                            exact_grads = [x for x in exact[1:] if x is not None]
                            model_grads = [x for x in model[1:] if x is not None]
                            got_err = errors(got[0], grads, exact[0], exact_grads)
                            model_err = errors(model[0], model_grads, exact[0], exact_grads)
                            result = verdict(got_err, model_err)
                            cells = " | ".join(
                                [
                                    f"{got_err[0]:.1e}",
                                    f"{got_err[1]:.1e}",
                                    f"{model_err[0]:.1e}, {model_err[1]:.1e}",
                                ]
                            )
                        except Exception as error:  # reported in its row; the other cases still run
                            seconds = time.perf_counter() - start
                            result = "ERROR"
                            cells = f"{type(error).__name__}: {str(error).splitlines()[0][:120]} | | "
                        passed[precision] = passed.get(precision, True) and result == "PASS"
                        first = (precision, dim) not in compiled
                        compiled.add((precision, dim))
                        print(
                            f"| {precision} | {term} | {dim} | {n} | {tau} | {result} | {cells} | "
                            f"{seconds:.2f}{' (compile)' if first else ''} |",
                            flush=True,
                        )


def regime_inputs(regime: str, device: str, smoke: bool):
    """(features, labels) of a loss benchmark regime: contrastive_loss.py's, or toy ones for --cpu-smoke."""
    if smoke:
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 4 if regime == "typical" else 2, (1, 32, 32), generator=g)
        features = [torch.randn(1, 8, 32 // s, 32 // s, generator=g) for s in (4, 8, 16, 32)]
    else:
        from contrastive_loss import make_features, make_labels

        labels, features = make_labels(regime), make_features()
    return [x.detach().to(device).requires_grad_() for x in features], labels.to(device)


def loss_settings(smoke: bool) -> dict:
    return {"num_classes": 4 if smoke else CLASSES, "min_views_per_class": 1 if smoke else 5}


def gate_loss(device: str, smoke: bool, passed: dict[str, bool]) -> None:
    print(
        "\n| loss (benchmark samples) | regime | result | loss rel. error | 1 - grad cosine | model error |"
    )
    print("|---|---|---|---:|---:|---:|")
    for regime in ("typical", "cap-bound"):
        features, labels = regime_inputs(regime, device, smoke)
        exact_fn = MSCSContrastiveLoss(**loss_settings(smoke), kernel="blockwise", matmul_precision="highest")
        drawn = exact_fn.draw_samples(features, labels, generator=torch.Generator(device).manual_seed(0))

        exact, exact_grads = loss_and_grads(exact_fn, drawn, torch.float64)
        for precision in PRECISIONS:
            settings = {**loss_settings(smoke), "matmul_precision": precision}
            try:
                got = errors(
                    *loss_and_grads(MSCSContrastiveLoss(**settings, kernel="triton"), drawn, torch.float32),
                    exact,
                    exact_grads,
                )
                model = errors(
                    *loss_and_grads(
                        MSCSContrastiveLoss(**settings, kernel="blockwise"), drawn, torch.float32
                    ),
                    exact,
                    exact_grads,
                )
                result = verdict(got, model)
                cells = f"{got[0]:.1e} | {got[1]:.1e} | {model[0]:.1e}, {model[1]:.1e}"
            except Exception as error:
                result, cells = "ERROR", f"{type(error).__name__}: {str(error).splitlines()[0][:120]} | |"
            passed[precision] = passed.get(precision, True) and result == "PASS"
            print(f"| triton-{precision} | {regime} | {result} | {cells} |", flush=True)


def time_steps(name: str, regime: str, step, device: str, smoke: bool, repeats: int) -> float | None:
    """Print and return the median ms of ``step()`` after warm-up (CUDA events on a GPU); None on error."""
    try:
        for _ in range(1 if smoke else 3):  # warm-up: compiled kernels and caches
            step()
        times = []
        for _ in range(repeats):
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                step()
                times.append(1000 * (time.perf_counter() - t0))
    except Exception as error:
        print(f"| {name} | {regime} | ERROR {type(error).__name__}: {str(error).splitlines()[0][:120]} | | |")
        return None
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    median = statistics.median(times)
    print(
        f"| {name} | {regime} | {median:.2f} | {quartiles[2] - quartiles[0]:.2f} | {len(times)} |", flush=True
    )
    return median


TIMING_HEADER = "\n| implementation | regime | median ms | IQR ms | steps |\n|---|---|---:|---:|---:|"


def time_losses(
    device: str, smoke: bool, repeats: int, passed: dict[str, bool]
) -> dict[tuple[str, str], float]:
    """Median ms of a whole loss step (sampling, terms, backward) per (implementation, regime)."""
    implementations = {"blockwise": {"kernel": "blockwise"}}
    implementations.update(
        {f"triton-{p}": {"kernel": "triton", "matmul_precision": p} for p in passed if passed[p]}
    )
    print(f"\nWhole loss forward+backward on {device} (sampling, every term, backward):")
    print(TIMING_HEADER)
    medians = {}
    for regime in ("typical", "cap-bound"):
        features, labels = regime_inputs(regime, device, smoke)
        for name, settings in implementations.items():
            loss_fn = MSCSContrastiveLoss(**loss_settings(smoke), **settings)

            def step(loss_fn=loss_fn, features=features, labels=labels):
                loss_fn(features, labels)[0].backward()

            median = time_steps(name, regime, step, device, smoke, repeats)
            if median is not None:
                medians[name, regime] = median
    return medians


def time_compiled(device: str, smoke: bool, repeats: int) -> None:
    """torch.compile(dynamic=True) of the terms of the blockwise loss (the sampler does not trace: its random
    keys have a data-dependent size), checked against eager on the same samples, then timed like the rest."""
    print("\nThe same with the terms compiled: torch.compile(loss_from_samples, dynamic=True), blockwise:")
    print(TIMING_HEADER)
    for regime in ("typical", "cap-bound"):
        features, labels = regime_inputs(regime, device, smoke)
        loss_fn = MSCSContrastiveLoss(**loss_settings(smoke), kernel="blockwise")
        terms = torch.compile(
            loss_fn.loss_from_samples, dynamic=True, backend="eager" if smoke else "inductor"
        )
        try:
            drawn = loss_fn.draw_samples(features, labels, generator=torch.Generator(device).manual_seed(0))
            got, want = terms(drawn)[0].detach(), loss_fn.loss_from_samples(drawn)[0].detach()
            agree = abs(float(got) / float(want) - 1) <= 1e-5
        except Exception as error:
            print(f"| compiled blockwise | {regime} | ERROR {type(error).__name__}: {str(error)[:120]} | | |")
            continue
        if not agree:
            print(
                f"| compiled blockwise | {regime} | FAIL: loss {float(got)} against eager {float(want)} | | |"
            )
            continue

        def step(loss_fn=loss_fn, terms=terms, features=features, labels=labels):
            terms(loss_fn.draw_samples(features, labels))[0].backward()

        time_steps("compiled blockwise", regime, step, device, smoke, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per row (default 20)")
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU, Triton's interpreter, toy sizes")
    parser.add_argument(
        "--compiled", action="store_true", help="with --cpu-smoke: also the compiled rows (Dynamo only, slow)"
    )
    args = parser.parse_args()
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (or --cpu-smoke)")
    import triton

    device = "cpu" if smoke else "cuda"
    where = (
        "CPU smoke run (Triton interpreter, toy sizes: not measurements)"
        if smoke
        else torch.cuda.get_device_name()
    )
    print(f"{where}; torch {torch.__version__}, triton {triton.__version__}, {datetime.date.today()}")
    passed: dict[str, bool] = {}
    gate_kernels(SMOKE if smoke else FULL, device, passed)
    gate_loss(device, smoke, passed)
    medians = time_losses(device, smoke, 1 if smoke else args.repeats, passed)
    for precision in PRECISIONS:
        name = f"triton-{precision}"
        faster = all(
            (name, r) in medians and medians[name, r] < medians.get(("blockwise", r), 0)
            for r in ("typical", "cap-bound")
        )
        stamp = f"{where}, {datetime.date.today()}, torch {torch.__version__}, triton {triton.__version__}"
        if passed.get(precision) and faster and not smoke:
            print(f'verified: VERIFIED_TRITON["{precision}"] = "{stamp}"')
        else:
            why = (
                "gate failed"
                if not passed.get(precision)
                else "not faster than blockwise"
                if not smoke
                else "smoke run"
            )
            print(f"not verified: {precision} ({why})")
    # last: the first call compiles for a minute or more; the rows above are already printed
    if not smoke or args.compiled:
        time_compiled(device, smoke, 1 if smoke else args.repeats)
    if not all(passed.get(p) for p in PRECISIONS):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
