"""MATLAB gpufilter(): channel selection, mean and median removal, forward-backward Butterworth.

Unlike scipy.signal.filtfilt there is no padding and no initial-condition matching: the filter runs
forward, then over the time-reversed result, in float32, exactly as the original does.
"""
from __future__ import annotations

import numpy as np
import scipy.signal

from .backend import array_module
from .kernels import lfilter

__all__ = ["filter_coefficients", "gpufilter"]


def filter_coefficients(*, fs: float, fshigh: float, fslow: float | None = None):
    """3rd-order Butterworth (b, a): high-pass at fshigh, or band-pass when fslow < fs/2 is given."""
    if fslow is not None and fslow < fs / 2:
        return scipy.signal.butter(3, [2 * fshigh / fs, 2 * fslow / fs], btype="bandpass")
    return scipy.signal.butter(3, 2 * fshigh / fs, btype="high")


def gpufilter(buff, *, chan_map: np.ndarray, b, a, car: bool = True):
    """Filter a raw batch like MATLAB gpufilter(buff, ops, chanMap).

    Args:
        buff: (n_time, NchanTOT) raw samples (numpy or cupy; any numeric dtype).
        chan_map: (Nchan,) 0-based rows of ``buff`` to keep.
        b, a: filter coefficients (see :func:`filter_coefficients`).
        car: subtract the median across channels (ops.CAR).

    Returns:
        (n_time, Nchan) float32 Fortran-ordered array on buff's device.
    """
    xp = array_module(buff)
    # select channels and convert in one Fortran-ordered copy: each channel contiguous in time
    x = xp.asarray(buff.T[xp.asarray(chan_map)], dtype=xp.float32, order="C").T
    x -= x.mean(axis=0, dtype=xp.float32)
    if car:
        x -= xp.median(x, axis=1).astype(xp.float32)[:, None]
    lfilter(x, b, a, out=x)
    lfilter(x, b, a, reverse=True, out=x)
    return x
