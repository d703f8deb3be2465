"""The statistical test behind the sampling check: chi-square p-values and binning."""

from __future__ import annotations

import numpy as np
import pytest

from ortgen.validate.sampling_check import binned_chi_square, chi_square_p_value


@pytest.mark.parametrize("statistic, dof, expected", [
    (23.209, 10, 0.01),  # chi-square table values
    (29.588, 10, 0.001),
    (9.342, 10, 0.5),
    (124.342, 100, 0.05),
])
def test_p_value_approximation_matches_tables(statistic, dof, expected):
    assert chi_square_p_value(statistic, dof) == pytest.approx(expected, rel=0.1)


def test_binned_test_accepts_the_right_distribution_and_rejects_a_wrong_one():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(300, 0.3))
    draws = rng.choice(300, size=2000, p=probs)
    counts = np.bincount(draws, minlength=300).astype(float)
    statistic, dof, bins = binned_chi_square(counts, probs)
    assert bins >= 20 and chi_square_p_value(statistic, dof) > 1e-3
    uniform = np.bincount(rng.integers(0, 300, size=2000), minlength=300).astype(float)
    statistic, dof, _ = binned_chi_square(uniform, probs)
    assert chi_square_p_value(statistic, dof) < 1e-6
