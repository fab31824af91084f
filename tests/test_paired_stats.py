"""benchmarks/paired_stats.py: the t distribution against published table values, the exact Wilcoxon
test against hand-counted enumerations, and a paired comparison worked by hand."""

from __future__ import annotations

import math

import pytest

from tests.test_benchmarks import load_benchmark

stats = load_benchmark("paired_stats")

# t quantiles from standard tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2), to the digits printed
T_TABLE = {
    (0.975, 1): 12.706,
    (0.975, 2): 4.303,
    (0.975, 4): 2.776,
    (0.975, 9): 2.262,
    (0.975, 30): 2.042,
    (0.995, 4): 4.604,
    (0.95, 10): 1.812,
    (0.9, 100): 1.290,
}


@pytest.mark.parametrize("probability, df", list(T_TABLE))
def test_student_t_quantile_matches_the_table(probability, df):
    assert stats.student_t_quantile(probability, df) == pytest.approx(T_TABLE[probability, df], abs=6e-4)
    assert stats.student_t_quantile(1 - probability, df) == -stats.student_t_quantile(probability, df)


def test_student_t_p_value_in_closed_forms_and_at_its_quantiles():
    # df 1 is the Cauchy distribution: P(|T| >= t) = 1 - 2 atan(t) / pi; df 2: 1 - t / sqrt(2 + t^2)
    for t in (0.0, 0.3, 1.0, 4.0, 60.0):
        assert stats.student_t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, abs=1e-12)
        assert stats.student_t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    for df in (3, 7, 25):
        assert stats.student_t_two_sided_p(stats.student_t_quantile(0.975, df), df) == pytest.approx(
            0.05, abs=1e-9
        )


def test_wilcoxon_exact_p_counts_the_sign_assignments():
    # 5 differences, all positive: only all-positive and all-negative are as extreme: 2 of 32
    assert stats.wilcoxon_exact_p([1.0, 2.0, 3.0, 4.0, 5.0]) == 2 / 32
    # ranks 1..4, W+ = 1 + 2 (from -3 and -4 negative): |W+ - 5| = 2; sign sets with |W+ - 5| >= 2 among
    # the 16: W+ in {0,1,2,3,7,8,9,10}: counts 1,1,1,2,2,1,1,1 = 10
    assert stats.wilcoxon_exact_p([0.1, 0.2, -0.3, -0.4]) == 10 / 16
    assert stats.wilcoxon_exact_p([0.0, 0.0]) == 1.0  # no non-zero difference: nothing against the null
    # ties share their mean rank and zeros are dropped: [2, -2, 0, 5] -> ranks 1.5, 1.5, 3; W+ = 4.5,
    # centre 3; the 8 sign sets give W+ = 0, 1.5, 1.5, 3, 3, 4.5, 4.5, 6, of which 6 are >= 1.5 from 3
    assert stats.wilcoxon_exact_p([2.0, -2.0, 0.0, 5.0]) == 6 / 8


def test_paired_comparison_worked_by_hand():
    a = {0: 59.0, 1: 60.1, 2: 58.7, 3: 59.9, 4: 60.2, 7: 1.0}  # seed 7 has no partner: left out
    b = {0: 58.5, 1: 60.3, 2: 58.0, 3: 59.1, 4: 60.0}
    result = stats.compare_paired(a, b)
    assert result.seeds == (0, 1, 2, 3, 4) and result.n == 5 and result.wins == 1
    assert result.differences == pytest.approx((-0.5, 0.2, -0.7, -0.8, -0.2))
    # mean -0.4, sample std 0.40620..., standard error 0.18166, t(4) = 2.7764: half-width 0.50437
    assert result.mean == pytest.approx(-0.4)
    assert (result.low, result.high) == pytest.approx((-0.90437, 0.10437), abs=1e-5)
    assert result.t_p == pytest.approx(0.092454, abs=1e-6)  # t = -2.2019 on 4 degrees of freedom
    assert result.wilcoxon_p == pytest.approx(4 / 32)  # W+ = 2 (the +0.2, rank 2): 4 of 32 as extreme
    with pytest.raises(ValueError, match="at least 2 shared seeds"):
        stats.compare_paired({0: 1.0}, {0: 2.0, 1: 3.0})
    constant = stats.compare_paired({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.5})  # no spread: the interval is a point
    assert (constant.low, constant.mean, constant.high, constant.t_p) == (0.5, 0.5, 0.5, 0.0)
