"""Slow, obvious references for the fast kernels (written for clarity, not speed)."""
import numpy as np


def lfilter_naive(x, b, a, *, reverse=False):
    """filter(b, a, x) along axis 0 in float32: a Python loop over time, vectorised over channels.

    Direct form II transposed, evaluated in GNU Octave's order: z[k] = z[k+1] - a[k+1]*y + b[k+1]*x.
    """
    n = max(len(a), len(b))
    b = np.pad(np.asarray(b, np.float64), (0, n - len(b))) / a[0]
    a = np.pad(np.asarray(a, np.float64), (0, n - len(a))) / a[0]
    b, a = b.astype(np.float32), a.astype(np.float32)
    x = np.asarray(x, np.float32)
    if reverse:
        return lfilter_naive(x[::-1], b, a)[::-1]
    order = len(b) - 1
    z = np.zeros((order + 1, x.shape[1]), np.float32)
    y = np.empty_like(x)
    for t in range(x.shape[0]):
        y[t] = z[0] + b[0] * x[t]
        for k in range(order - 1):
            z[k] = z[k + 1] - a[k + 1] * y[t] + b[k + 1] * x[t]
        z[order - 1] = b[order] * x[t] - a[order] * y[t]
    return y


def gpufilter_naive(buff, chan_map, b, a, car=True):
    """gpufilter.m line by line: single(), mean, median, filter, flipud, filter, flipud."""
    x = buff[:, chan_map].astype(np.float32)
    x = x - x.mean(axis=0, dtype=np.float32)
    if car:
        x = x - np.median(x, axis=1, keepdims=True).astype(np.float32)
    return lfilter_naive(lfilter_naive(x, b, a), b, a, reverse=True)
