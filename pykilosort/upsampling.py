"""Kriging kernels that upsample temporal components (getKernels.m of Kilosort2 v2.0).

mexSVDsmall2 uses them to find a template's trough at 1/nup sample resolution (Ka) and to
shift the template by that fraction of a sample (Kb).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["get_kernels", "matlab_linspace"]

_RIDGE = 0.01  # diagonal regularisation of the kernel matrix before the solve


def matlab_linspace(d1: float, d2: float, n: int, *, style: str = "matlab") -> np.ndarray:
    """linspace(d1, d2, n) rounded like MATLAB (style='matlab') or GNU Octave >= 7 ('octave').

    MATLAB: d1 + (k*(d2-d1))/(n-1). Octave 7: d1 + k*delta for the first half and d2 - k*delta
    for the second, delta = (d2-d1)/(n-1), middle element (d1+d2)/2. numpy's linspace (k times a
    rounded step) matches neither. Either way the ends are exactly d1 and d2.
    """
    if style not in ("matlab", "octave"):
        raise ValueError(f"style={style!r} must be 'matlab' or 'octave'")
    n1 = n - 1
    if n1 < 1:
        return np.full(max(n, 0), float(d2))
    k = np.arange(n, dtype=np.float64)
    if style == "matlab":
        y = d1 + (k * (d2 - d1)) / n1
    else:
        delta = (d2 - d1) / n1
        y = np.where(k < n // 2, d1 + k * delta, d2 - (n1 - k) * delta)
        if n % 2 == 1:
            y[n // 2] = 0.0 if d1 == -d2 else (d1 + d2) / 2
    y[0], y[-1] = d1, d2
    return y


def _circular_sq_exp(a: np.ndarray, b: np.ndarray, *, period: int, sig: float) -> np.ndarray:
    """exp(-d^2/sig^2) with d the distance between a[i] and b[j] on a circle of length period."""
    d = np.fmod(a[:, None] - b[None, :] + period, period)  # arguments stay > 0: fmod == rem
    d = np.minimum(d, period - d)
    return np.exp(-d ** 2 / sig ** 2)


def _right_divide_symmetric(rhs: np.ndarray, m: np.ndarray) -> np.ndarray:
    """rhs / m (MATLAB mrdivide) for symmetric m: Cholesky when m is positive definite, as
    MATLAB's mldivide tries first, else a symmetric-indefinite (LDL) solve."""
    try:
        factor = scipy.linalg.cho_factor(m, lower=True)  # lower: bit-identical to Octave 7.3
    except np.linalg.LinAlgError:
        return scipy.linalg.solve(m, rhs.T, assume_a="sym").T
    return scipy.linalg.cho_solve(factor, rhs.T).T


def get_kernels(*, nt0: int, nt0min: int, nup: int = 10, sig: float = 1.0,
                linspace: str = "matlab"):
    """(Ka, Kb): float64 kriging upsampling kernels for waveforms of nt0 samples.

    nt0min is ops.nt0min, MATLAB's 1-based trough sample (ceil(20*nt0/61), = derived.nt0min).
    The nt0*nup upsampled times are 0.5 + k/nup (1-based sample units, k = 0..nt0*nup-1), each
    interpolated from the nt0 samples with a squared-exponential kernel of scale sig on a
    circular time axis (distance mod nt0), ridge 0.01: B = Kyx (Kxx + 0.01 I)^-1, (nt0*nup, nt0).
    linspace: how the upsampled times are rounded, 'matlab' or 'octave' (GNU Octave >= 7, for
    bit-level comparisons with Octave runs of the original); they differ by ~1e-14 in B.

    Returns, Fortran-ordered (the memory layout mexSVDsmall2 reads):
      Ka: (nup, nt0); Ka[a, c] is the weight of sample c at time (nt0min-1) - 0.5 + a/nup in
          0-based samples, i.e. B[(nt0min-1)*nup + a, c]. Equals MATLAB Ka(a+1, c+1).
      Kb: (nt0, nt0, nup); Kb[b, c, a] is the weight of sample c at 0-based time b - 0.5 + a/nup,
          i.e. B[b*nup + a, c]. Equals MATLAB Kb(b+1, c+1, a+1).
    """
    if not 1 <= nt0min <= nt0:
        raise ValueError(f"nt0min={nt0min} is MATLAB's 1-based trough sample: it must be "
                         f"between 1 and nt0={nt0}")
    if nup < 1 or sig <= 0:
        raise ValueError(f"need nup >= 1 and sig > 0, got nup={nup}, sig={sig}")
    xs = np.arange(1, nt0 + 1, dtype=np.float64)
    ys = matlab_linspace(0.5, nt0 + 0.5, nt0 * nup + 1, style=linspace)[:-1]
    kxx = _circular_sq_exp(xs, xs, period=nt0, sig=sig)
    kyx = _circular_sq_exp(ys, xs, period=nt0, sig=sig)
    b = _right_divide_symmetric(kyx, kxx + _RIDGE * np.eye(nt0))
    # row r of b is upsampled time r: split it as (r % nup, r // nup), MATLAB's reshape order
    b3 = b.reshape((nup, nt0, nt0), order="F")
    ka = b3[:, nt0min - 1, :]
    kb = b3.transpose(1, 2, 0)
    return np.asfortranarray(ka), np.asfortranarray(kb)
