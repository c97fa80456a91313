"""threshold_spike_pcs: spikes of a whitened batch found on PC projections, with their PC features.

The semantics of Kilosort2's mexThSpkPC (called by extractPCbatch2.m for the batch reordering of
clusterSingleBatches): project every nt0-sample window of every channel on the temporal PCs,
take the norm of the projection, keep windows where that norm is a local maximum in time and
the largest among the channel's neighbours and exceeds ThPre, and return the PC projections of
the detected snippets on the neighbour channels.

The original returns spikes in the order its GPU threads happened to increment a counter; ours
come sorted by detection sample, then by channel, on both devices. Its output was silently cut
at maxFR = 100000 spikes; ours raises :class:`SpikeCapacityError` naming ``max_spikes``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .getspikes import _correlate_ranks
from .registry import cuda_module, dispatch, register

from ..errors import SpikeCapacityError

__all__ = ["threshold_spike_pcs", "ThresholdSpikes", "covered_samples", "SpikeCapacityError",
           "DEFAULT_MAX_SPIKES", "LEGACY_CHUNK"]

DEFAULT_MAX_SPIKES = 100_000  # the original's maxFR
LEGACY_CHUNK = 1024           # the original's threads per block: it convolves whole chunks only
_TILE = 2048                  # samples per parallel work item of the CPU twin (performance only)
_THREADS = 256                # CUDA threads per block (performance only)
_NT0_MAX, _NRANK_MAX = 81, 3  # shared-memory defaults of cuda/thspkpc.cu


class ThresholdSpikes(NamedTuple):
    """Spikes of one batch, sorted by time then channel (arrays on the input's device).

    features: (nrank * nnear, n) float32, Fortran; row k + nrank*j is the projection on PC k of
        the snippet on neighbour channel j (iC[j, channel]). MATLAB's ``uS``.
    channels: (n,) int32, 0-based channel of each spike (MATLAB's ``idchan`` is this + 1).
    times: (n,) int64, 0-based first sample of each projected snippet, i.e. the sample where
        the projection norm peaks (the mex's internal spike index is ``times - (nt0min - 1)``).
    """

    features: object
    channels: object
    times: object


def threshold_spike_pcs(*, data, wpca, iC, nt0min: int, spk_th: float,
                        max_spikes: int = DEFAULT_MAX_SPIKES,
                        legacy_coverage: bool = True) -> ThresholdSpikes:
    """``[uS, idchan] = mexThSpkPC([NT Nchan NchanNear nt0 nt0min spkTh NrankPC], dataRAW, wPCA, iC-1)``.

    Args:
        data: (NT, Nchan) float32 whitened batch (dataRAW = int16 batch / scaleproc); numpy
            runs the numba twin, cupy the CUDA kernels. Any layout (copied to Fortran order).
        wpca: (nt0, nrank) temporal PCs (the caller passes wPCA(:, 1:3)); cast to float32.
        iC: (nnear, Nchan) integer, 0-based nearest channels of each channel (MATLAB iC - 1),
            column c starting with the channel that stands for c (normally c itself).
        nt0min: ops.nt0min, MATLAB's 1-based template trough sample (20 for nt0 = 61): a
            spike is kept when the norm peaks nt0min - 1 samples into its nt0-sample window.
        spk_th: ops.ThPre, the threshold on the projection norm.
        max_spikes: capacity for the spikes of this batch (the original's maxFR); more raise
            :class:`SpikeCapacityError` instead of being dropped.
        legacy_coverage: True (as the original) to project only the first whole multiples of
            1024 samples that fit (the batch tail is never detected, see :func:`covered_samples`);
            False to project every full window.

    Returns:
        :class:`ThresholdSpikes` (features, channels, times), sorted by time then channel.
    """
    wpca, iC = (v if hasattr(v, "ndim") else np.asarray(v) for v in (wpca, iC))
    NT, nchan, nt0, nrank, nnear = _check(data, wpca, iC, nt0min)
    n_cov = covered_samples(NT=NT, nt0=nt0, legacy=legacy_coverage)
    n_det = max(NT - nt0 - nt0min, 0)  # detection samples: the original's loop bound
    if int(max_spikes) < 0:
        raise ValueError(f"max_spikes must be >= 0, got {max_spikes}")
    feat, chans, st = dispatch("threshold_spike_pcs", data)(
        data, wpca, iC, int(nt0min), np.float32(spk_th), n_cov, n_det, int(max_spikes))
    return ThresholdSpikes(feat, chans, st + (int(nt0min) - 1))


def covered_samples(*, NT: int, nt0: int, legacy: bool = True) -> int:
    """Number of leading samples whose window projection is computed (the rest count as 0).

    The original convolves in chunks of 1024 samples and only while a whole chunk's windows fit
    in the batch: ceil((NT - 1024 - nt0 + 1) / 1024) * 1024 samples (65536 of NT = 65600; 64512
    of NT = 65472, leaving 30 ms per batch where no spike can be found). ``legacy=False`` gives
    all NT - nt0 + 1 full windows.
    """
    if not legacy:
        return max(NT - nt0 + 1, 0)
    room = NT - LEGACY_CHUNK - nt0 + 1
    return LEGACY_CHUNK * math.ceil(room / LEGACY_CHUNK) if room > 0 else 0


def _check(data, wpca, iC, nt0min):
    if data.ndim != 2:
        raise ValueError(f"data must be 2-D (NT, Nchan), got shape {data.shape}")
    if data.dtype != np.float32:
        raise TypeError(f"data must be float32 (the original works in single precision), got {data.dtype}")
    if wpca.ndim != 2 or min(wpca.shape) < 1:
        raise ValueError(f"wpca must be 2-D (nt0, nrank) and non-empty, got shape {wpca.shape}")
    if iC.ndim != 2 or iC.shape[0] < 1 or iC.shape[1] != data.shape[1]:
        raise ValueError(f"iC must be (nnear, Nchan={data.shape[1]}) with nnear >= 1, got {iC.shape}")
    if not np.issubdtype(iC.dtype, np.integer):
        raise TypeError(f"iC must hold integer channel indices, got {iC.dtype}")
    if iC.size and (int(iC.min()) < 0 or int(iC.max()) >= data.shape[1]):
        raise ValueError(f"iC must hold 0-based channel indices in [0, {data.shape[1]}) (MATLAB's "
                         f"iC - 1), got values in [{int(iC.min())}, {int(iC.max())}]")
    nt0, nrank = wpca.shape
    if not 1 <= int(nt0min) <= nt0:
        raise ValueError(f"nt0min={nt0min} is MATLAB's 1-based trough sample: it must be "
                         f"between 1 and nt0={nt0}")
    return data.shape[0], data.shape[1], nt0, nrank, iC.shape[0]


def _overflow(total, max_spikes):
    return SpikeCapacityError(
        f"threshold_spike_pcs found {total} spikes in one batch but max_spikes={max_spikes} "
        "(the original's maxFR silently dropped the excess): raise max_spikes, or check the "
        "threshold (ThPre) and the whitening of the data")


# ------------------------------------------------------------------------------ CPU (numba)
# The twin takes transposed, C-ordered views (dataT (Nchan, NT), WT (nrank, nt0), iCT (Nchan,
# nnear), featT (n, nrank*nnear)) of the Fortran arrays: one row per channel, PC or spike is
# contiguous, and numba compiles one specialisation whatever the shapes (a Fortran array with
# one column is also C-contiguous and would otherwise compile a second one).
@numba.njit(cache=True, nogil=True)
def _project_norm(x, WT, t0, n, out):
    """out[u] = |W' x[t0+u : t0+u+nt0]| for u < n, float32, every sum in index order (as the
    CUDA kernel). ``out`` must hold zeros; it accumulates the squared projections.

    Vectorised over u by getspikes' ``_correlate_ranks`` (the same sums in the same order)."""
    y = np.zeros((WT.shape[0], 1, n), np.float32)
    _correlate_ranks(y, 0, x, WT.T, t0, n)
    for k in range(WT.shape[0]):
        yk = y[k, 0]
        for u in range(n):
            out[u] += yk[u] * yk[u]
    for u in range(n):
        out[u] = np.sqrt(out[u])


@numba.njit(cache=True, nogil=True)
def _window_max(conv, nt0, th, out):
    """out[u] = max(0, conv[u : u+nt0]) if that exceeds th, else 0 (NaNs never win).

    Van Herk / Gil-Werman: cut conv into blocks of nt0; every window spans the end of one block
    and the start of the next, so its maximum is the larger of a suffix maximum and a prefix
    maximum. Three selects per sample instead of nt0; a maximum does not depend on the order
    it is taken in, so the values are those of the direct loop."""
    m = out.size
    n = m + nt0 - 1
    pre = np.empty(n, np.float32)
    suf = np.empty(n, np.float32)
    zero = np.float32(0)
    for b0 in range(0, n, nt0):
        b1 = min(b0 + nt0, n)
        a = zero
        for i in range(b0, b1):
            v = conv[i]
            a = v if v > a else a
            pre[i] = a
        a = zero
        for i in range(b1 - 1, b0 - 1, -1):
            v = conv[i]
            a = v if v > a else a
            suf[i] = a
    for u in range(m):
        p, q = suf[u], pre[u + nt0 - 1]
        y = q if q > p else p
        out[u] = y if y > th else zero


@numba.njit(cache=True, nogil=True)
def _tile_hits(dataT, WT, iCT, nt0min, th, n_cov, t0, m, hit):
    """Mark hit[t0+u, c] for the spikes at samples t0 .. t0+m-1; return how many."""
    nchan, nt0, nnear = dataT.shape[0], WT.shape[1], iCT.shape[1]
    span = m + nt0 - 1                      # the projections the tile's windows read
    n_proj = max(min(span, n_cov - t0), 0)  # beyond n_cov they are zero
    conv = np.zeros((nchan, span), np.float32)
    dmax = np.empty((nchan, m), np.float32)
    for c in range(nchan):
        _project_norm(dataT[c], WT, t0, n_proj, conv[c])
        _window_max(conv[c], nt0, th, dmax[c])
    count = 0
    for c in range(nchan):
        ch = iCT[c, 0]
        for u in range(m):
            cf = dmax[ch, u]
            if not cf > th:
                continue
            largest = True
            for j in range(1, nnear):
                if dmax[iCT[c, j], u] > cf:
                    largest = False
                    break
            # the norm must peak nt0min-1 samples into the window (compared in double)
            if largest and np.float64(conv[ch, u + nt0min - 1]) > np.float64(cf) - 1e-6:
                hit[t0 + u, c] = 1
                count += 1
    return count


@numba.njit(parallel=True, cache=True, nogil=True)
def _detect_twin(dataT, WT, iCT, nt0min, th, n_cov, n_det, tile, hit):
    """Fill the (n_det, Nchan) uint8 mask ``hit``; return the hit count of each tile."""
    n_tiles = (n_det + tile - 1) // tile
    counts = np.zeros(n_tiles, np.int64)
    for b in numba.prange(n_tiles):
        t0 = b * tile
        counts[b] = _tile_hits(dataT, WT, iCT, nt0min, th, n_cov, t0, min(tile, n_det - t0), hit)
    return counts


@numba.njit(parallel=True, cache=True, nogil=True)
def _gather_twin(hit, iCT, tile, counts, st, ids):
    """Spike samples and channels in (sample, channel-column) order, tile by tile."""
    n_det, nchan = hit.shape
    offsets = np.zeros(counts.size + 1, np.int64)
    offsets[1:] = np.cumsum(counts)
    for b in numba.prange(counts.size):
        o = offsets[b]
        for t in range(b * tile, min(n_det, (b + 1) * tile)):
            for c in range(nchan):
                if hit[t, c]:
                    st[o] = t
                    ids[o] = iCT[c, 0]
                    o += 1


@numba.njit(parallel=True, cache=True, nogil=True)
def _features_twin(dataT, WT, iCT, st, ids, nt0min, featT):
    nrank, nt0 = WT.shape
    nnear = iCT.shape[1]
    for n in numba.prange(st.size):
        t0 = st[n] + nt0min - 1
        for j in range(nnear):
            x = dataT[iCT[ids[n], j]]
            for k in range(nrank):
                acc = np.float32(0)
                for i in range(nt0):
                    acc += x[t0 + i] * WT[k, i]
                featT[n, k + nrank * j] = acc


def _sort_spikes(st, ids, nchan, xp):
    """Order by (sample, channel); equal keys are identical spikes, so any tie order will do."""
    key = st.astype(xp.int64) * nchan + ids
    order = np.argsort(key, kind="stable") if xp is np else xp.argsort(key)
    return st[order], ids[order]


@register("threshold_spike_pcs", "cpu")
def _threshold_spike_pcs_cpu(data, wpca, iC, nt0min, th, n_cov, n_det, max_spikes):
    dataT = np.asfortranarray(data).T
    WT = np.ascontiguousarray(np.asarray(wpca, np.float32).T)
    iCT = np.ascontiguousarray(np.asarray(iC, np.int64).T)
    nchan = dataT.shape[0]
    hit = np.zeros((n_det, nchan), np.uint8)
    counts = _detect_twin(dataT, WT, iCT, nt0min, th, n_cov, n_det, _TILE, hit)
    total = int(counts.sum())
    if total > max_spikes:
        raise _overflow(total, max_spikes)
    st = np.empty(total, np.int64)
    ids = np.empty(total, np.int32)
    _gather_twin(hit, iCT, _TILE, counts, st, ids)
    st, ids = _sort_spikes(st, ids, nchan, np)
    featT = np.empty((total, WT.shape[0] * iCT.shape[1]), np.float32)
    _features_twin(dataT, WT, iCT, st, ids, nt0min, featT)
    return featT.T, ids, st


# ------------------------------------------------------------------------------ CUDA (CuPy)
def _module(nt0, nrank):
    defines = (("THSPKPC_THREADS", _THREADS), ("THSPKPC_NT0_MAX", max(_NT0_MAX, nt0)),
               ("THSPKPC_NRANK_MAX", max(_NRANK_MAX, nrank)))
    return cuda_module("thspkpc.cu", defines)


def _blocks(n):
    return (n + _THREADS - 1) // _THREADS


@register("threshold_spike_pcs", "cuda")
def _threshold_spike_pcs_cuda(data, wpca, iC, nt0min, th, n_cov, n_det, max_spikes):
    import cupy

    data = cupy.asfortranarray(data)
    W = cupy.asarray(wpca, dtype=cupy.float32, order="F")
    iC = cupy.asarray(iC, dtype=cupy.int32, order="F")
    NT, nchan = data.shape
    nt0, nrank = W.shape
    nnear = iC.shape[0]
    mod = _module(nt0, nrank)
    conv = cupy.zeros((NT, nchan), cupy.float32, order="F")
    dmax = cupy.zeros((NT, nchan), cupy.float32, order="F")
    if n_cov > 0 and nchan > 0:
        grid = (_blocks(n_cov), nchan)
        mod.get_function("thspkpc_project_norm")(grid, (_THREADS,), (
            data, W, conv, np.int64(NT), np.int32(nt0), np.int32(nrank), np.int64(n_cov)))
        mod.get_function("thspkpc_window_max")(grid, (_THREADS,), (
            conv, dmax, np.int64(NT), np.int32(nt0), np.int64(n_cov), np.float32(th)))
    counter = cupy.zeros(1, cupy.uint64)
    st = cupy.empty(max(max_spikes, 1), cupy.int32)
    ids = cupy.empty(max(max_spikes, 1), cupy.int32)
    if n_det > 0 and nchan > 0:
        mod.get_function("thspkpc_find_peaks")((_blocks(n_det), nchan), (_THREADS,), (
            conv, dmax, iC, st, ids, counter, np.int64(NT), np.int32(nnear), np.int32(nt0min),
            np.int64(n_det), np.float32(th), np.int64(max_spikes)))
    total = int(counter.get()[0])
    if total > max_spikes:
        raise _overflow(total, max_spikes)
    st, ids = _sort_spikes(st[:total], ids[:total], nchan, cupy)
    feat = cupy.empty((nrank * nnear, total), cupy.float32, order="F")
    if total:
        mod.get_function("thspkpc_features")((_blocks(feat.size),), (_THREADS,), (
            data, W, iC, st, ids, feat, np.int64(NT), np.int32(nt0), np.int32(nrank),
            np.int32(nnear), np.int32(nt0min), np.int64(total)))
    return feat, ids, st.astype(cupy.int64)
