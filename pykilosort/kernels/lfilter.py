"""lfilter: an IIR filter along time for many channels at once, float32 (CUDA kernel + numba twin).

This is the filtering inside MATLAB gpufilter(): ``filter(b, a, x)`` along the time axis of a
(n_time, n_chan) array, forward or on the time-reversed signal. The direct-form-II-transposed
recurrence is evaluated in the order GNU Octave's filter() uses (z[k+1] - a*y + b*x): float32
rounding then matches the original run under Octave bit for bit (matlab_reference tests).
"""
from __future__ import annotations

import numba
import numpy as np

from .registry import cuda_module, dispatch, register

__all__ = ["lfilter", "lfilter_forward_backward", "normalize_coefficients", "DEFAULT_MAX_ORDER"]

DEFAULT_MAX_ORDER = 8  # matches the #ifndef default in cuda/lfilter.cu
_THREADS = 128


def normalize_coefficients(b, a) -> tuple[np.ndarray, np.ndarray]:
    """Divide by a[0], pad b and a to the same length, cast to float32 (the kernels' precision)."""
    b = np.atleast_1d(np.asarray(b, np.float64))
    a = np.atleast_1d(np.asarray(a, np.float64))
    if b.ndim != 1 or a.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError("b and a must be non-empty 1-D coefficient vectors")
    if a[0] == 0:
        raise ValueError("a[0] must be non-zero")
    n = max(a.size, b.size)
    bb = np.zeros(n)
    aa = np.zeros(n)
    bb[: b.size] = b / a[0]
    aa[: a.size] = a / a[0]
    return bb.astype(np.float32), aa.astype(np.float32)


def lfilter(x, b, a, *, reverse: bool = False, out=None):
    """Filter each column of ``x`` (shape (n_time, n_chan), float32, any memory layout) along time.

    Args:
        x: (n_time, n_chan) float32 numpy (CPU twin) or cupy (CUDA kernel) array.
        b, a: filter coefficients (any float dtype; normalised by a[0] and cast to float32).
        reverse: filter the time-reversed signal and write it back in original order, i.e.
            ``flip(filter(b, a, flip(x)))``.
        out: optional output array of x's shape and dtype (may be ``x`` itself for in-place).

    Returns:
        (n_time, n_chan) float32 array on x's device.
    """
    return _run(x, b, a, -1 if reverse else 1, out)


def lfilter_forward_backward(x, b, a, *, out=None):
    """``flip(filter(b, a, flip(filter(b, a, x))))`` per column, in one pass over memory (as
    MATLAB gpufilter filters; no padding, unlike scipy's filtfilt). Arguments as :func:`lfilter`."""
    return _run(x, b, a, 2, out)


def _run(x, b, a, passes, out):
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_time, n_chan), got shape {x.shape}")
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32 (the original filters in single precision), got {x.dtype}")
    bb, aa = normalize_coefficients(b, a)
    if out is None:
        out = x.copy(order="K")
    elif out.shape != x.shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 with shape {x.shape}")
    dispatch("lfilter", x)(x, bb, aa, passes, out)
    return out


@numba.njit(cache=True, nogil=True)
def _pass(x, y, c, b, a, reverse):
    """One filter pass over column c of x into column c of y (may be the same array)."""
    n_time = x.shape[0]
    order = b.size - 1
    z = np.zeros(order + 1, np.float32)
    for i in range(n_time):
        t = n_time - 1 - i if reverse else i
        xi = x[t, c]
        yi = z[0] + b[0] * xi
        for k in range(order - 1):
            z[k] = z[k + 1] - a[k + 1] * yi + b[k + 1] * xi
        if order > 0:
            z[order - 1] = b[order] * xi - a[order] * yi
        y[t, c] = yi


@numba.njit(parallel=True, cache=True, nogil=True)
def _lfilter_twin(x, b, a, passes, y):
    for c in numba.prange(x.shape[1]):
        _pass(x, y, c, b, a, passes == -1)
        if passes == 2:  # while the column is still in cache
            _pass(y, y, c, b, a, True)


@register("lfilter", "cpu")
def _lfilter_cpu(x, b, a, passes, out):
    _lfilter_twin(x, b, a, passes, out)


@register("lfilter", "cuda")
def _lfilter_cuda(x, b, a, passes, out):
    import cupy

    order = b.size - 1
    max_order = max(DEFAULT_MAX_ORDER, order)
    kernel = cuda_module("lfilter.cu", (("LFILTER_MAX_ORDER", max_order),)).get_function("lfilter_f32")
    n_time, n_chan = x.shape
    item = x.itemsize
    grid = ((n_chan + _THREADS - 1) // _THREADS,)
    kernel(grid, (_THREADS,), (
        x, out, cupy.asarray(b), cupy.asarray(a), np.int32(order), np.int64(n_time),
        np.int64(n_chan), np.int64(x.strides[0] // item), np.int64(x.strides[1] // item),
        np.int64(out.strides[0] // item), np.int64(out.strides[1] // item), np.int32(passes)))
