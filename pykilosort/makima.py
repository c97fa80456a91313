"""MATLAB's ``interp1(x, y, xq, 'makima', 'extrap')``: modified Akima cubic Hermite interpolation.

Kilosort 2.5's shift_batch_on_disk2 interpolates the per-block drift estimates to every channel's
depth with it. GNU Octave 7 has no 'makima', so this is written from MATLAB's documented
definition (MathWorks, "makima": Akima's weights with an extra |delta_i + delta_{i-1}| / 2 term,
Ionita 2019) and checked against it and against ``scipy.interpolate.Akima1DInterpolator(...,
method="makima")`` (tests/test_makima.py).

Definition, for breakpoints x_1 < ... < x_n with slopes delta_i = (y_{i+1} - y_i) / (x_{i+1} - x_i):
    * two slopes are added at each end by quadratic extrapolation: delta_0 = 2 delta_1 - delta_2,
      delta_{-1} = 2 delta_0 - delta_1, and likewise after delta_{n-1};
    * the derivative at x_i is d_i = (w_1 delta_{i-1} + w_2 delta_i) / (w_1 + w_2), with
      w_1 = |delta_{i+1} - delta_i| + |delta_{i+1} + delta_i| / 2 and
      w_2 = |delta_{i-1} - delta_{i-2}| + |delta_{i-1} + delta_{i-2}| / 2; where both weights
      are 0 the four slopes around x_i are all 0, and so is d_i;
    * each interval is the cubic Hermite polynomial through (x_i, y_i, d_i), (x_{i+1}, y_{i+1},
      d_{i+1}); 'extrap' evaluates the first and last polynomials beyond the ends.
Two breakpoints give the straight line through them, one a constant.
"""
from __future__ import annotations

import numpy as np

__all__ = ["makima_slopes", "makima"]


def makima_slopes(*, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) derivatives d_i of the modified Akima interpolant at the breakpoints (n >= 3)."""
    delta = np.diff(y) / np.diff(x)
    first = 2 * delta[0] - delta[1]
    last = 2 * delta[-1] - delta[-2]
    ext = np.concatenate([[2 * first - delta[0], first], delta, [last, 2 * last - delta[-1]]])
    # w[j] compares ext[j] and ext[j + 1]: the weight of d_i on delta_{i-1} is w[i + 2], on
    # delta_i it is w[i] (0-based i; ext[i + 1] is delta_{i-1} and ext[i + 2] is delta_i)
    w = np.abs(np.diff(ext)) + np.abs(ext[:-1] + ext[1:]) / 2
    w_left, w_right = w[2:], w[:-2]
    total = w_left + w_right
    safe = np.where(total > 0, total, 1.0)
    d = (w_left * ext[1:-2] + w_right * ext[2:-1]) / safe
    return np.where(total > 0, d, 0.0)


def makima(*, x, y, xq) -> np.ndarray:
    """``interp1(x, y, xq, 'makima', 'extrap')`` for increasing x (n,), y (n,); returns xq's shape.

    Raises ValueError for x that is not strictly increasing, mismatched lengths or non-finite
    input (MATLAB's interp1 refuses them too).
    """
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    xq = np.asarray(xq, np.float64)
    if x.size != y.size or x.size == 0:
        raise ValueError(f"makima: x has {x.size} points and y {y.size}; they must match (>= 1)")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("makima: x and y must be finite")
    if np.any(np.diff(x) <= 0):
        raise ValueError("makima: x must be strictly increasing")
    if x.size == 1:
        return np.full(xq.shape, y[0])
    if x.size == 2:
        return y[0] + (xq - x[0]) * ((y[1] - y[0]) / (x[1] - x[0]))
    d = makima_slopes(x=x, y=y)
    i = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, x.size - 2)
    h = x[i + 1] - x[i]
    delta = (y[i + 1] - y[i]) / h
    s = xq - x[i]
    c2 = (3 * delta - 2 * d[i] - d[i + 1]) / h
    c3 = (d[i] - 2 * delta + d[i + 1]) / h ** 2
    return y[i] + s * (d[i] + s * (c2 + s * c3))
