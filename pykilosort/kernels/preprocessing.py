"""Fused preprocessing kernels (numba on the CPU, CuPy array code on the GPU).

- ``common_reference``: raw int16 samples -> selected channels as float32, per-channel mean removed,
  median across channels removed (gpufilter's first lines), in one pass.
- ``count_crossings``: per-channel count of isolated negative peaks (get_good_channels' core).
- ``round_int16``: MATLAB int16() rounding (half away from zero, saturating).
- ``whiten_sparse``: the whitening product over a local whitening matrix's non-zero weights.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .registry import dispatch, register

__all__ = ["common_reference", "count_crossings", "round_int16", "SparseColumns",
           "sparse_whitening", "whiten_sparse"]


def common_reference(buff, chan_map, *, car: bool = True):
    """(n, NchanTOT) raw samples -> (n, Nchan) float32 Fortran array: channels ``chan_map``,
    minus each channel's mean, minus (if ``car``) the median across channels at each sample."""
    return dispatch("common_reference", buff)(buff, chan_map, bool(car))


def count_crossings(datr, *, spk_th: float, nt0: int, NT: int, half_window: int = 30):
    """Per-channel counts (Nchan,) int64 of samples that are local minima within +-half_window
    samples (to 1e-3) and below ``spk_th`` after z-scoring each channel (population std), with
    MATLAB 1-based sample index in [nt0, NT - nt0]. Flat channels (std 0) have no crossings.

    datr: (n, Nchan) float32 filtered batch.
    """
    return dispatch("count_crossings", datr)(datr, float(spk_th), int(nt0), int(NT), int(half_window))


def round_int16(x):
    """MATLAB int16(): round half away from zero, saturate at the int16 limits; NaN -> 0."""
    return dispatch("round_int16", x)(x)


# ------------------------------------------------------------------------------ CPU (numba)
@numba.njit(parallel=True, cache=True, nogil=True)
def _channel_means(buff, chan_map, n_chunks):
    n, nchan = buff.shape[0], chan_map.size
    partial = np.zeros((n_chunks, nchan), np.float64)
    step = (n + n_chunks - 1) // n_chunks
    for k in numba.prange(n_chunks):
        for t in range(k * step, min(n, (k + 1) * step)):
            for c in range(nchan):
                partial[k, c] += buff[t, chan_map[c]]
    # integer-valued samples sum exactly in float64, so the chunking does not change the result
    return (partial.sum(axis=0) / n).astype(np.float32)


_BLOCK = 128  # samples per work item: each channel is then written in 512-byte runs


@numba.njit(cache=True, nogil=True)
def _select(a, k):
    """Move the k-th smallest element of ``a`` to a[k] (quickselect, in place) and return it."""
    lo, hi = 0, a.size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        pivot = max(min(a[lo], a[mid]), min(max(a[lo], a[mid]), a[hi]))  # median of three
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@numba.njit(cache=True, nogil=True)
def _middle(a, k, even):
    """The k-th smallest of ``a`` (reordered in place), or its mean with the next if ``even``."""
    lower = _select(a, k)
    if not even:
        return lower
    upper = a[k + 1]
    for i in range(k + 2, a.size):  # after selection, a[k+1:] holds the larger values
        upper = min(upper, a[i])
    return np.float32(lower + upper) / np.float32(2.0)


@numba.njit(cache=True, nogil=True)
def _median(v, scratch):
    """np.median of ``v`` (1-D float32): the middle value, or the mean of the two middle ones."""
    n = v.size
    scratch[:n] = v
    return _middle(scratch[:n], (n - 1) // 2, n % 2 == 0)


_SAMPLE, _SAMPLE_HALF_WIDTH = 21, 4  # the bracket: ranks 6 and 14 of 21 evenly spaced channels


@numba.njit(cache=True, nogil=True)
def _median_bracketed(v, scratch, sample):
    """The same value as :func:`_median`, about 2x faster on a few hundred channels.

    Quickselect over all of ``v`` mispredicts most of its branches. Instead, the ranks
    middle +- 4 of an evenly spaced subsample bracket the median. One branch-free pass counts
    the values below the bracket and gathers those inside it (about 40% of them on
    Neuropixels data), and the selection runs on those only. When the median falls outside
    the bracket (about 6% of samples), the whole vector is searched. ``sample`` holds
    ``_SAMPLE`` floats of scratch space.
    """
    n, ns = v.size, sample.size
    if n < 4 * ns:
        return _median(v, scratch)
    stride = n // ns
    for i in range(ns):  # insertion sort of the subsample
        x = v[i * stride]
        j = i
        while j > 0 and sample[j - 1] > x:
            sample[j] = sample[j - 1]
            j -= 1
        sample[j] = x
    lo, hi = sample[ns // 2 - _SAMPLE_HALF_WIDTH], sample[ns // 2 + _SAMPLE_HALF_WIDTH]
    below, m = 0, 0
    for i in range(n):
        x = v[i]
        below += x < lo
        scratch[m] = x
        m += (x >= lo) & (x <= hi)
    k = (n - 1) // 2 - below  # the lower middle's rank among the gathered values
    even = n % 2 == 0
    if k < 0 or k + even >= m:
        return _median(v, scratch)
    return _middle(scratch[:m], k, even)


@numba.njit(parallel=True, cache=True, nogil=True)
def _common_reference_twin(buff, chan_map, car, n_chunks, out):
    n, nchan = out.shape
    mean = _channel_means(buff, chan_map, n_chunks)
    for blk in numba.prange((n + _BLOCK - 1) // _BLOCK):
        t0 = blk * _BLOCK
        m = min(_BLOCK, n - t0)
        v = np.empty((m, nchan), np.float32)
        scratch = np.empty(nchan, np.float32)
        sample = np.empty(_SAMPLE, np.float32)
        for i in range(m):  # gather the block channel-fastest (how the raw file stores it)
            for c in range(nchan):
                v[i, c] = np.float32(buff[t0 + i, chan_map[c]]) - mean[c]
            if car:
                med = _median_bracketed(v[i], scratch, sample)
                for c in range(nchan):
                    v[i, c] -= med
        for c in range(nchan):  # then write it time-fastest
            for i in range(m):
                out[t0 + i, c] = v[i, c]


@register("common_reference", "cpu")
def _common_reference_cpu(buff, chan_map, car):
    out = np.empty((buff.shape[0], len(chan_map)), np.float32, order="F")
    _common_reference_twin(buff, np.ascontiguousarray(chan_map, dtype=np.int64), car,
                           numba.get_num_threads(), out)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _count_crossings_twin(datr, spk_th, nt0, NT, half):
    n, nchan = datr.shape
    counts = np.zeros(nchan, np.int64)
    th = np.float32(spk_th)
    margin = np.float32(1e-3)
    for c in numba.prange(nchan):
        x = datr[:, c]
        s = 0.0
        for t in range(n):
            s += x[t]
        mu = s / n
        ss = 0.0
        for t in range(n):
            ss += (x[t] - mu) ** 2
        std = np.float32(np.sqrt(ss / n))
        if std == 0:
            continue
        k = 0
        for t in range(max(nt0 - 1, 0), min(n, NT - nt0)):  # 1-based t+1 in [nt0, NT-nt0]
            zt = x[t] / std
            if not zt < th:
                continue
            # only samples below threshold (a few per thousand) need their window's minimum;
            # z is recomputed with the same float32 division, so the test is unchanged
            zmin = zt
            for j in range(max(t - half, 0), min(n, t + half + 1)):
                zmin = min(zmin, x[j] / std)
            if zt < zmin + margin:
                k += 1
        counts[c] = k
    return counts


@register("count_crossings", "cpu")
def _count_crossings_cpu(datr, spk_th, nt0, NT, half):
    return _count_crossings_twin(np.asfortranarray(datr, dtype=np.float32), spk_th, nt0, NT, half)


@numba.njit(parallel=True, cache=True, nogil=True)
def _round_int16_twin(x, out):
    for i in numba.prange(x.size):  # flat views in memory order
        v = x[i]
        if np.isnan(v):
            out[i] = 0
            continue
        t = np.trunc(v)
        if abs(v - t) >= 0.5:
            t += 1.0 if v > 0 else -1.0
        out[i] = np.int16(min(max(t, -32768.0), 32767.0))


@register("round_int16", "cpu")
def _round_int16_cpu(x):
    order = "F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"
    x = np.asarray(x, np.float32, order=order)
    out = np.empty(x.shape, np.int16, order=order)
    _round_int16_twin(x.reshape(-1, order=order), out.reshape(-1, order=order))
    return out


# ------------------------------------------------------------------------------ CUDA (CuPy)
@register("common_reference", "cuda")
def _common_reference_cuda(buff, chan_map, car):
    import cupy

    x = cupy.asarray(buff.T[cupy.asarray(chan_map)], dtype=cupy.float32, order="C").T
    x -= x.mean(axis=0, dtype=cupy.float64).astype(cupy.float32)
    if car:
        x -= cupy.median(x, axis=1).astype(cupy.float32)[:, None]
    return x


@register("count_crossings", "cuda")
def _count_crossings_cuda(datr, spk_th, nt0, NT, half):
    import cupy
    from cupyx.scipy.ndimage import minimum_filter1d

    std = datr.std(axis=0)
    flat = std == 0
    z = datr / cupy.where(flat, 1, std)
    zmin = minimum_filter1d(z, size=2 * half + 1, axis=0, mode="constant", cval=cupy.inf)
    hit = (z < zmin + cupy.float32(1e-3)) & (z < cupy.float32(spk_th))
    t1 = cupy.arange(1, z.shape[0] + 1)
    hit &= ((t1 >= nt0) & (t1 <= NT - nt0))[:, None]
    hit[:, flat] = False
    return hit.sum(axis=0).get()


@register("round_int16", "cuda")
def _round_int16_cuda(x):
    import cupy

    t = cupy.trunc(x)
    r = t + cupy.sign(x) * (cupy.abs(x - t) >= 0.5)
    return cupy.clip(cupy.nan_to_num(r, nan=0.0), -32768, 32767).astype(cupy.int16)


# ------------------------------------------------------------------- whitening (CPU, sparse)
_SPARSE_WHITENING = 8  # a column with at most Nchan / 8 non-zero weights counts as sparse


class SparseColumns(NamedTuple):
    """The non-zero weights of a whitening matrix, column by column: column j's are
    ``vals[:count[j], j]`` on rows ``rows[:count[j], j]`` (ascending)."""
    rows: np.ndarray   # (K, Nchan) int64
    vals: np.ndarray   # (K, Nchan) float32
    count: np.ndarray  # (Nchan,) int64


def sparse_whitening(wrot: np.ndarray) -> SparseColumns | None:
    """The non-zero weights of ``wrot`` (Nchan, Nchan) if every column has at most
    Nchan / 8 of them (local whitening, whiteningRange = 32, on 256 channels or more), else
    None: then a BLAS product is faster than :func:`whiten_sparse`."""
    w = np.asarray(wrot, np.float32)
    nz = w != 0
    count = nz.sum(axis=0).astype(np.int64)
    if count.max(initial=0) * _SPARSE_WHITENING > w.shape[0]:
        return None
    k = max(int(count.max(initial=0)), 1)
    rows = np.zeros((k, w.shape[1]), np.int64)
    vals = np.zeros((k, w.shape[1]), np.float32)
    for j in range(w.shape[1]):
        r = np.flatnonzero(nz[:, j])
        rows[:r.size, j], vals[:r.size, j] = r, w[r, j]
    return SparseColumns(rows, vals, count)


def whiten_sparse(datr: np.ndarray, *, cols: SparseColumns) -> np.ndarray:
    """(n, Nchan) float32 Fortran ``datr @ wrot`` over the non-zero weights only.

    Each output sample sums its channel's weighted inputs in row order, in float32 (multiply,
    then add): the result does not depend on the CPU, BLAS or thread count, and differs from a
    BLAS product only in rounding (float32 eps). At 384 channels with whiteningRange = 32 it
    does 1/12 of the dense work.
    """
    out = np.empty(datr.shape, np.float32, order="F")
    # no Fortran copy: a slice of rows of a Fortran batch still has contiguous channels
    _whiten_sparse_twin(np.asarray(datr, dtype=np.float32), cols.rows, cols.vals, cols.count, out)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _whiten_sparse_twin(datr, rows, vals, count, out):
    n = datr.shape[0]
    for j in numba.prange(out.shape[1]):
        o = out[:, j]
        o[:] = 0
        for k in range(count[j]):
            v = vals[k, j]
            x = datr[:, rows[k, j]]
            for t in range(n):
                o[t] += v * x[t]
