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


# The CPU twin filters _LANES channels at once: their samples are copied, _SPAN at a time, into
# a (time, lane) buffer, so that the recurrence's inner loops run over lanes and vectorise (3x
# faster than one channel at a time at 384 channels). Each channel's arithmetic is unchanged.
_LANES, _SPAN = 32, 128


@numba.njit(cache=True, nogil=True)
def _pass_lanes(x, y, c0, n_lanes, b, a, reverse, buf, z, xv, yv):
    """One filter pass over columns c0 .. c0+n_lanes-1 of x into y (may be the same array).
    buf (_SPAN * _LANES,), z (order * _LANES,), xv and yv (_LANES,): float32 scratch."""
    n_time = x.shape[0]
    order = b.size - 1
    z[:] = 0
    for s0 in range(0, n_time, _SPAN):
        m = min(_SPAN, n_time - s0)
        for j in range(n_lanes):  # gather
            col = x[:, c0 + j]
            for i in range(m):
                buf[i * _LANES + j] = col[n_time - 1 - (s0 + i) if reverse else s0 + i]
        for i in range(m):
            row = buf[i * _LANES: (i + 1) * _LANES]
            for j in range(_LANES):
                xv[j] = row[j]
                yv[j] = z[j] + b[0] * row[j]
            for k in range(order - 1):
                zk, zk1 = z[k * _LANES: (k + 1) * _LANES], z[(k + 1) * _LANES: (k + 2) * _LANES]
                bk, ak = b[k + 1], a[k + 1]
                for j in range(_LANES):
                    zk[j] = zk1[j] - ak * yv[j] + bk * xv[j]
            if order > 0:
                zl = z[(order - 1) * _LANES: order * _LANES]
                bo, ao = b[order], a[order]
                for j in range(_LANES):
                    zl[j] = bo * xv[j] - ao * yv[j]
            for j in range(_LANES):
                row[j] = yv[j]
        for j in range(n_lanes):  # scatter
            col = y[:, c0 + j]
            for i in range(m):
                col[n_time - 1 - (s0 + i) if reverse else s0 + i] = buf[i * _LANES + j]


@numba.njit(parallel=True, cache=True, nogil=True)
def _lfilter_twin(x, b, a, passes, y):
    n_chan = x.shape[1]
    for blk in numba.prange((n_chan + _LANES - 1) // _LANES):
        c0 = blk * _LANES
        n_lanes = min(_LANES, n_chan - c0)
        buf = np.zeros(_SPAN * _LANES, np.float32)  # lanes beyond n_lanes filter zeros
        z = np.zeros(max(b.size - 1, 1) * _LANES, np.float32)
        xv, yv = np.zeros(_LANES, np.float32), np.zeros(_LANES, np.float32)
        _pass_lanes(x, y, c0, n_lanes, b, a, passes == -1, buf, z, xv, yv)
        if passes == 2:  # while the columns are still in cache
            _pass_lanes(y, y, c0, n_lanes, b, a, True, buf, z, xv, yv)


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
