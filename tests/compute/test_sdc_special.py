"""Chi-square, t and F tails of compute.sdc.special against closed forms and tables."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.sdc.special import beta_i, chi2_sf, f_sf, gamma_q, t_ppf, t_sf_two_sided


def _chi2_sf_even(x: float, dof: int) -> float:
    """Closed form for even dof: exp(-x/2) * sum_{i < dof/2} (x/2)^i / i! (A&S §26.4)."""
    half = x / 2
    term, total = 1.0, 1.0
    for i in range(1, dof // 2):
        term *= half / i
        total += term
    return math.exp(-half) * total


@pytest.mark.parametrize(("x", "dof", "p"), [
    # Upper critical values of the chi-square distribution (NIST/SEMATECH e-Handbook
    # §1.3.6.7.4; any statistics textbook table).
    (3.841459, 1, 0.05), (6.634897, 1, 0.01), (10.827566, 1, 0.001),
    (5.991465, 2, 0.05), (7.814728, 3, 0.05), (11.070498, 5, 0.05),
    (18.307038, 10, 0.05), (23.209251, 10, 0.01), (31.410433, 20, 0.05),
    (124.342113, 100, 0.05),
])
def test_chi2_sf_matches_critical_value_tables(x: float, dof: int, p: float) -> None:
    assert chi2_sf(x, dof) == pytest.approx(p, rel=2e-6)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.001, 400.0), st.integers(1, 60))
def test_chi2_sf_matches_the_closed_form_for_even_dof(x: float, half: int) -> None:
    want = _chi2_sf_even(x, 2 * half)
    assert chi2_sf(x, 2 * half) == pytest.approx(want, rel=1e-9, abs=1e-300)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0001, 200.0))
def test_chi2_sf_with_one_dof_is_erfc(x: float) -> None:
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9, abs=1e-300)


def test_chi2_sf_edges_and_far_tail() -> None:
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(-1.0, 3) == 1.0
    # Far tail keeps its relative precision (no 1 - cdf cancellation).
    assert chi2_sf(200.0, 2) == pytest.approx(math.exp(-100), rel=1e-12)
    assert gamma_q(1.0, math.inf) == 0.0
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)
    with pytest.raises(ValueError):
        gamma_q(1.0, -1.0)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 1e6))
def test_t_tail_matches_cauchy_and_two_dof_closed_forms(t: float) -> None:
    # dof 1 is the Cauchy distribution; dof 2 has cdf 1/2 + t / (2 sqrt(2 + t^2)).
    # Absolute 1e-8: p-values are reported to far fewer digits, and near t = 0 the
    # incomplete-beta route rounds 1 - 1e-9 to 1.
    assert t_sf_two_sided(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi,
                                                 rel=1e-9, abs=1e-8)
    assert t_sf_two_sided(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t),
                                                 rel=1e-7, abs=1e-8)


@pytest.mark.parametrize(("dof", "crit"), [
    # Two-sided 5 % critical values of Student's t (textbook tables, six decimals).
    (1, 12.706205), (2, 4.302653), (5, 2.570582), (9, 2.262157), (10, 2.228139),
    (30, 2.042272), (120, 1.979930),
])
def test_t_quantile_matches_tables(dof: int, crit: float) -> None:
    assert t_ppf(0.975, dof) == pytest.approx(crit, abs=2e-6)
    assert t_sf_two_sided(crit, dof) == pytest.approx(0.05, rel=1e-5)


def test_t_quantile_tends_to_the_normal_one() -> None:
    assert t_ppf(0.975, 1e9) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError):
        t_ppf(0.4, 10)


@pytest.mark.parametrize(("f", "d1", "d2"), [
    # Upper 5 % points of F (textbook tables).
    (161.4476, 1, 1), (4.964603, 1, 10), (3.098391, 3, 20), (3.325835, 5, 10),
    (2.533555, 5, 30), (2.689628, 4, 30),
])
def test_f_sf_matches_tables(f: float, d1: int, d2: int) -> None:
    assert f_sf(f, d1, d2) == pytest.approx(0.05, rel=2e-5)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 50.0), st.integers(1, 500))
def test_f_with_one_numerator_dof_is_t_squared(t: float, dof: int) -> None:
    assert f_sf(t * t, 1, dof) == pytest.approx(t_sf_two_sided(t, dof), rel=1e-9, abs=1e-300)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.001, 0.999), st.floats(0.1, 50.0), st.floats(0.1, 50.0))
def test_incomplete_beta_symmetry(x: float, a: float, b: float) -> None:
    assert beta_i(x, a, b) + beta_i(1 - x, b, a) == pytest.approx(1.0, abs=1e-12)


def test_incomplete_beta_closed_forms() -> None:
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b.
    assert beta_i(0.3, 2.5, 1.0) == pytest.approx(0.3 ** 2.5, rel=1e-12)
    assert beta_i(0.3, 1.0, 4.0) == pytest.approx(1 - 0.7 ** 4, rel=1e-12)
    assert beta_i(0.0, 2, 3) == 0.0
    assert beta_i(1.0, 2, 3) == 1.0
    with pytest.raises(ValueError):
        beta_i(1.5, 2, 3)
