"""interp1(..., 'makima', 'extrap') (pykilosort.makima) against MATLAB's documented definition
(written out literally below, 1-based as in the documentation), scipy's makima, and the
properties MathWorks documents: exact on straight lines, no overshoot on flat stretches."""
import numpy as np
import pytest
from scipy.interpolate import Akima1DInterpolator

from pykilosort.makima import makima, makima_slopes


def _documented(x, y, xq):
    """The definition as MathWorks states it, one breakpoint and one query at a time."""
    n = len(x)
    delta = {i: (y[i] - y[i - 1]) / (x[i] - x[i - 1]) for i in range(1, n)}  # on [x_i-1, x_i]
    delta[0] = 2 * delta[1] - delta[2]
    delta[-1] = 2 * delta[0] - delta[1]
    delta[n] = 2 * delta[n - 1] - delta[n - 2]
    delta[n + 1] = 2 * delta[n] - delta[n - 1]
    d = []
    for i in range(1, n + 1):  # breakpoint x_i (1-based); left slope delta[i-1], right delta[i]
        w1 = abs(delta[i + 1] - delta[i]) + abs(delta[i + 1] + delta[i]) / 2
        w2 = abs(delta[i - 1] - delta[i - 2]) + abs(delta[i - 1] + delta[i - 2]) / 2
        d.append(0.0 if w1 + w2 == 0 else (w1 * delta[i - 1] + w2 * delta[i]) / (w1 + w2))
    out = []
    for q in xq:
        k = min(max(np.searchsorted(x, q, side="right") - 1, 0), n - 2)
        h, t = x[k + 1] - x[k], (q - x[k]) / (x[k + 1] - x[k])
        h00, h10 = 2 * t ** 3 - 3 * t ** 2 + 1, t ** 3 - 2 * t ** 2 + t
        h01, h11 = -2 * t ** 3 + 3 * t ** 2, t ** 3 - t ** 2
        out.append(h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1])
    return np.array(d), np.array(out)


def _problem(seed, n):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.uniform(5, 40, n))            # block centres in um, uneven
    y = rng.normal(0, 10, n)                        # drift estimates in um
    xq = np.linspace(x[0] - 60, x[-1] + 60, 257)    # channel depths, beyond both ends too
    return x, y, xq


@pytest.mark.parametrize("n", [3, 4, 5, 9, 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_documented_definition(seed, n):
    x, y, xq = _problem(seed, n)
    d_doc, y_doc = _documented(x, y, xq)
    np.testing.assert_allclose(makima_slopes(x=x, y=y), d_doc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(makima(x=x, y=y, xq=xq), y_doc, rtol=0, atol=1e-10 * np.abs(y).max())


@pytest.mark.parametrize("n", [3, 5, 9, 20])
def test_matches_scipy_makima_with_extrapolation(n):
    x, y, xq = _problem(7, n)
    ref = Akima1DInterpolator(x, y, method="makima", extrapolate=True)(xq)
    np.testing.assert_allclose(makima(x=x, y=y, xq=xq), ref, rtol=0, atol=1e-10 * np.abs(y).max())


def test_straight_lines_are_exact_and_flat_stretches_do_not_overshoot():
    x = np.array([0.0, 10, 25, 40, 60, 70])
    xq = np.linspace(-20, 90, 400)
    np.testing.assert_allclose(makima(x=x, y=3 - 0.5 * x, xq=xq), 3 - 0.5 * xq, atol=1e-12)
    step = np.array([0.0, 0, 0, 1, 1, 1])
    got = makima(x=x, y=step, xq=np.linspace(0, 70, 400))
    assert got.min() >= 0 and got.max() <= 1  # plain Akima and splines overshoot here
    inside = np.linspace(0, 25, 50)
    np.testing.assert_array_equal(makima(x=x, y=step, xq=inside), 0.0)  # flat stays flat


def test_few_points_and_bad_input():
    np.testing.assert_allclose(makima(x=[0, 10], y=[1, 3], xq=[-5, 5, 20]), [0, 2, 5])
    np.testing.assert_array_equal(makima(x=[4], y=[2.5], xq=[0, 9]), [2.5, 2.5])
    for x, y in (([0, 0, 1], [1, 2, 3]), ([2, 1, 3], [1, 2, 3]), ([0, 1], [1, 2, 3]),
                 ([0, 1, np.nan], [1, 2, 3])):
        with pytest.raises(ValueError):
            makima(x=x, y=y, xq=[0.5])
    assert makima(x=[0, 1, 2], y=[0, 1, 0], xq=np.zeros((2, 3))).shape == (2, 3)
