"""Isolated negative peaks in a whitened batch (isolated_peaks_new.m of Kilosort2 v2.0).

Also the two running filters it is built on, my_min.m and my_sum.m. Everything here is written
against ``xp = array_module(S1)`` so the same code runs on numpy and CuPy arrays.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .backend import array_module

__all__ = ["running_min", "running_count", "isolated_peaks_new"]

_MIN_MARGIN = 1e-3    # a sample is a local minimum if it is below (window minimum + 1e-3)
_ISOLATED_BELOW = 1.2  # isolated: the peak count in the long window (itself included) is < 1.2


def _as_pairs(half_widths, axes) -> list[tuple[int, int]]:
    """my_min/my_sum's pairing of bin sizes with axes: one per axis, or one scalar for all."""
    axes = [axes] if np.isscalar(axes) else list(axes)
    widths = [half_widths] if np.isscalar(half_widths) else list(half_widths)
    if len(widths) == 1:
        widths = widths * len(axes)
    if len(widths) < len(axes):
        raise ValueError(f"{len(widths)} half widths for {len(axes)} axes")
    for w in widths:
        if int(w) != w or w < 0:
            raise ValueError(f"half widths must be non-negative integers, got {half_widths!r}")
    return [(int(ax), int(w)) for ax, w in zip(axes, widths)]


def running_min(S, half_widths: int | Sequence[int], axes: int | Sequence[int] = 1):
    """my_min: minimum over a window of +-half_width samples, one axis after another.

    The array is padded with +inf on both sides of each axis, so the window is simply clipped at
    the edges. NaNs are skipped like MATLAB's min does (fmin); the result is the minimum over the
    full rectangle, whatever the axis order. Axes are 0-based (MATLAB's dim 1 is our axis 0).
    Returns an array of S's shape and dtype.
    """
    xp = array_module(S)
    out = S
    for axis, w in _as_pairs(half_widths, axes):
        if w == 0:
            continue
        moved = xp.moveaxis(out, axis, 0)
        n = moved.shape[0]
        padded = xp.full((n + 2 * w,) + moved.shape[1:], xp.inf, dtype=moved.dtype)
        padded[w:w + n] = moved
        acc = padded[0:n].copy()
        for j in range(1, 2 * w + 1):
            xp.fmin(acc, padded[j:j + n], out=acc)
        out = xp.moveaxis(acc, 0, axis)
    return out


def running_count(mask, half_widths: int | Sequence[int], axes: int | Sequence[int] = 1):
    """my_sum of a 0/1 array: number of True samples within +-half_width, one axis after another.

    The original sums single-precision 0/1 values with zero padding; those sums are small
    integers and therefore exact, so an integer box sum (by cumulative sums) gives the same
    numbers at a fraction of the cost of 2*half_width+1 shifted additions. Returns int32.
    """
    xp = array_module(mask)
    out = mask.astype(xp.int32)
    for axis, w in _as_pairs(half_widths, axes):
        moved = xp.moveaxis(out, axis, 0)
        n = moved.shape[0]
        csum = xp.zeros((n + 2 * w + 1,) + moved.shape[1:], dtype=xp.int32)
        xp.cumsum(moved, axis=0, out=csum[w + 1:w + 1 + n])
        csum[w + 1 + n:] = csum[w + n]  # the zero padding after the end adds nothing
        # window of sample i covers padded positions i .. i+2w, i.e. samples i-w .. i+w
        out = xp.moveaxis(csum[2 * w + 1:] - csum[:n], 0, axis)
    return out


def isolated_peaks_new(S1, *, spk_th: float, nt0: int, loc_range: Sequence[int] = (5, 4),
                       long_range: Sequence[int] = (30, 6)):
    """Threshold crossings that are local minima and have no other such crossing nearby.

    Parameters (the ops fields the original reads):
      S1:         (NT, Nchan) whitened batch in units of noise std (proc int16 / scaleproc); cast
                  to float32 like MATLAB's single. NT is S1.shape[0] (the original uses ``end``,
                  not ops.NT).
      spk_th:     ops.spkTh (negative, e.g. -6); a peak must be strictly below it.
      nt0:        ops.nt0; the first nt0 and the last nt0+1 samples of the batch are ignored.
      loc_range:  ops.loc_range, (time, channel) half widths of the local-minimum window.
      long_range: ops.long_range, (time, channel) half widths of the isolation window.
    Channels are neighbours by index (column order), not by probe geometry.

    Returns (row, col, mu), like MATLAB's ``[row, col, mu] = find(peaks)``:
      row: (n,) int64 0-based sample index within the batch (MATLAB row - 1)
      col: (n,) int64 0-based channel index (MATLAB col - 1)
      mu:  (n,) float32 amplitude, -S1[row, col] (positive for negative peaks)
    ordered like MATLAB's column-major find: by channel, then by time.
    """
    xp = array_module(S1)
    S1 = xp.asarray(S1, dtype=xp.float32)
    n_time = S1.shape[0]
    smin = running_min(S1, loc_range, (0, 1))
    # Python scalars meet float32 arrays as float32 (NEP 50): single arithmetic, as in MATLAB
    is_peak = (S1 < smin + _MIN_MARGIN) & (S1 < spk_th)
    isolated = running_count(is_peak, long_range, (0, 1)) < _ISOLATED_BELOW
    # multiply rather than select, so a NaN sample propagates into find() as in the original
    peaks = is_peak.astype(xp.float32) * isolated.astype(xp.float32) * S1
    peaks[:min(nt0, n_time)] = 0
    peaks[max(n_time - 1 - nt0, 0):] = 0  # MATLAB rows end-nt0:end, nt0+1 of them
    # nonzero of the transpose walks channel-major, which is MATLAB's column-major find order
    col, row = xp.nonzero(peaks.T)
    mu = -peaks[row, col]
    return row.astype(xp.int64), col.astype(xp.int64), mu
