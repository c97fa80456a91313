"""MATLAB gpufilter(): channel selection, mean and median removal, forward-backward Butterworth.

Unlike scipy.signal.filtfilt there is no padding and no initial-condition matching: the filter runs
forward, then over the time-reversed result, in float32, exactly as the original does.
"""
from __future__ import annotations

import numpy as np
import scipy.signal

from .kernels import lfilter_forward_backward
from .kernels.preprocessing import common_reference

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
    x = common_reference(buff, chan_map, car=car)  # Fortran order: each channel contiguous in time
    lfilter_forward_backward(x, b, a, out=x)
    return x
