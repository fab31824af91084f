"""Paired comparisons of two ablation arms over the same seeds (same initialisation and data order).

The unit of comparison is the seed: for seeds s = 1..n, d_s = b_s - a_s. This module gives the mean
difference, its 95% confidence interval from the Student t distribution, the paired t-test p-value and
the exact Wilcoxon signed-rank p-value (no normal approximation: with 5 seeds the smallest two-sided
value it can reach is 2 / 2^5 = 0.0625). Standard library only: the t distribution comes from the
regularised incomplete beta function (continued fraction, Lentz's method), its quantile by bisection.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PairedComparison",
    "compare_paired",
    "student_t_two_sided_p",
    "student_t_quantile",
    "wilcoxon_exact_p",
]


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):  # the continued fraction converges fast only below this point
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def student_t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for T ~ Student t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if math.isinf(t):
        return 0.0
    return _incomplete_beta(df / (df + t * t), df / 2, 0.5)


def student_t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile of Student t with `df` degrees of freedom (0 < probability < 1)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    if probability == 0.5:
        return 0.0
    tail = 2 * min(probability, 1 - probability)  # two-sided tail mass beyond the quantile's magnitude
    low, high = 0.0, 1.0
    while student_t_two_sided_p(high, df) > tail:
        high *= 2
    for _ in range(200):  # bisection: the two-sided p falls monotonically in |t|
        middle = (low + high) / 2
        if student_t_two_sided_p(middle, df) > tail:
            low = middle
        else:
            high = middle
    magnitude = (low + high) / 2
    return magnitude if probability > 0.5 else -magnitude


def wilcoxon_exact_p(differences: Sequence[float]) -> float:
    """Two-sided exact p-value of the Wilcoxon signed-rank test: zero differences dropped, tied
    magnitudes given their mean rank, the statistic's null distribution enumerated over all 2^n signs
    (n <= 20)."""
    nonzero = [d for d in differences if d != 0]
    n = len(nonzero)
    if n == 0:
        return 1.0
    if n > 20:
        raise ValueError(f"exact enumeration is for at most 20 non-zero differences, got {n}")
    order = sorted(range(n), key=lambda i: abs(nonzero[i]))
    ranks = [0.0] * n
    start = 0
    while start < n:  # mean ranks over runs of equal magnitudes
        end = start
        while end + 1 < n and abs(nonzero[order[end + 1]]) == abs(nonzero[order[start]]):
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    centre = sum(ranks) / 2  # the mean of W+ under the null hypothesis
    observed = abs(sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0) - centre)
    extreme = sum(
        abs(sum(r for r, positive in zip(ranks, signs, strict=True) if positive) - centre) >= observed - 1e-9
        for signs in itertools.product((False, True), repeat=n)
    )
    return extreme / 2**n


@dataclass(frozen=True)
class PairedComparison:
    """b - a over the seeds both arms have, in seed order."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float  # confidence interval of the mean difference
    high: float
    t_p: float  # paired t-test, two-sided
    wilcoxon_p: float  # exact signed-rank test, two-sided
    wins: int  # seeds where b > a

    @property
    def n(self) -> int:
        return len(self.differences)


def compare_paired(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> PairedComparison:
    """Paired comparison of two arms' results keyed by seed, on the seeds they share (at least 2)."""
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        raise ValueError(f"a paired comparison needs at least 2 shared seeds, got {list(seeds)}")
    differences = tuple(b[s] - a[s] for s in seeds)
    n = len(differences)
    mean = statistics.fmean(differences)
    error = statistics.stdev(differences) / math.sqrt(n)
    half_width = student_t_quantile(0.5 + level / 2, n - 1) * error
    if error > 0:
        t_p = student_t_two_sided_p(mean / error, n - 1)
    else:  # every seed differs by the same amount: no spread to test against
        t_p = 1.0 if mean == 0 else 0.0
    wins = sum(d > 0 for d in differences)
    return PairedComparison(
        seeds,
        differences,
        mean,
        mean - half_width,
        mean + half_width,
        t_p,
        wilcoxon_exact_p(differences),
        wins,
    )
