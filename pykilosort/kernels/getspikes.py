"""getspikes: new spikes in a residual batch, found with generic templates (Kilosort2's mexGetSpikes2).

learnTemplates calls ``[dWU0, cmap] = mexGetSpikes2(Params, drez, wTEMP, iC-1)`` to seed new templates
from what the current ones leave unexplained. The computation, stage by stage:

1. projection: ``proj[t, c, r] = sum_i wTEMP[i, r] * data[t + i, c]`` (a correlation, float32,
   summed in order of i);
2. channel scores: ``cmap[t, c] = max over r, j < n_sum of (sum_{k<=j} proj[t, iC[k, c], r])^2 / (j+1)``;
3. best channel: ``err[t]``, ``ftype[t]`` = the highest score over channels and its channel (a channel
   must beat the best so far by more than 1e-6);
4. local peaks: t with ``err[t] > th^2`` and no ``err`` larger within +-(nt0-1) samples;
5. heights: a peak survives only if no peak *anywhere in the batch* on a channel less than 5 indices
   away is strictly higher (so a batch yields at most a few spikes per group of 5 channels);
6. snippets: ``data[t : t + nt0, :]`` for each surviving t.

Quirks of the original reproduced on purpose (both devices; :func:`mex_coverage` computes them,
a later fix can change that one function):

- the projection covers only the first ``1024 * floor((NT - nt0) / 1024)`` samples (Conv1D's loop
  over 1024-sample tiles stops before a partial tile). Scores past it are 0;
- the best-channel search runs as a grid-stride loop of stride ``1024 * floor(NT / 1024)`` whose
  running best is never reset: a sample t >= stride starts from the best of sample t - stride.
  Since the scores there are 0 (previous quirk), the end of the batch inherits ``err`` and ``ftype``
  of its first samples, which can both suppress genuine peaks near the batch end and create
  spurious ones just past the covered range;
- local peaks are searched for t in [nt0 - 1, min(1024 * floor((NT - nt0 + 1) / 1024) + nt0 - 1,
  NT - nt0)), a range cleanup_spikes' tiling leaves.

The original keeps at most maxFR = 5000 candidates per batch and silently drops an arbitrary
(atomic-order) subset beyond; here more than ``max_spikes`` raises :class:`SpikeCapacityError`.
The original returns spikes in atomic order; both devices here return them sorted by time (times
are unique, one candidate per sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from .registry import cuda_module, dispatch, register

from ..errors import SpikeCapacityError

__all__ = ["detect_new_spikes", "NewSpikes", "MexCoverage", "mex_coverage", "SpikeCapacityError",
           "DEFAULT_MAX_SPIKES"]

DEFAULT_MAX_SPIKES = 5000  # the original's maxFR
_MEX_THREADS = 1024        # the original's Nthreads: its tiles and grids set the covered ranges
_CHANNEL_RANGE = 5         # cleanup_heights: channels whose indices differ by less than this compete
_NT0_MAX, _NRANK_MAX = 81, 6  # the #ifndef defaults in cuda/getspikes.cu
_THREADS = 256             # CUDA threads per block (any value works: results do not depend on it)
_CHUNK = 256               # CPU twin: samples per work item of the projection


class NewSpikes(NamedTuple):
    """Output of :func:`detect_new_spikes`; arrays on the input's device, spikes sorted by time.

    snippets: (nt0, Nchan, n) float32, Fortran order: ``data[t:t+nt0, :]`` per spike (MATLAB dWU0).
    cmap:     (NT, Nchan) float32, Fortran order: channel scores (MATLAB cmap).
    times:    (n,) int64, 0-based first sample of each snippet (the mex's internal st1, also
              0-based; never returned by it).
    channels: (n,) int64, 0-based best channel (the mex's internal id1).
    heights:  (n,) float32, the best score err[t] (the mex's internal x).
    """
    snippets: object
    cmap: object
    times: object
    channels: object
    heights: object


@dataclass(frozen=True)
class MexCoverage:
    """Sample ranges the original's launch geometry gives each stage (see the module docstring)."""
    n_conv: int       # projections computed for t < n_conv
    stride: int       # grid stride of the best-channel search (0: it never runs)
    lockout: int      # nt0 - 1: half width of the local-peak window
    peak_start: int   # local peaks searched for t in [peak_start, peak_stop)
    peak_stop: int


def mex_coverage(NT: int, nt0: int) -> MexCoverage:
    """The covered ranges of mexGetSpikes2 for a batch of NT samples and templates of nt0 samples."""
    tile = _MEX_THREADS
    lockout = nt0 - 1
    # Conv1D: tiles start at 0, 1024, ... while start + 1024 + nt0 - 1 <= NT
    n_conv = tile * max(0, (NT - nt0) // tile)
    # sumChannels / bestFilter / cleanup_spikes are launched on NT/1024 blocks of 1024 threads
    stride = tile * (NT // tile)
    # cleanup_spikes: block b runs once if b*1024 <= NT - 1024 - lockout; thread i tests
    # t = b*1024 + i + lockout, and only t < NT - lockout - 1
    n_blocks = max(0, (NT - lockout) // tile)
    peak_stop = max(lockout, min(n_blocks * tile + lockout, NT - lockout - 1))
    return MexCoverage(n_conv, stride, lockout, lockout, peak_stop)


def detect_new_spikes(data, *, templates, iC, th: float, n_sum: int,
                      max_spikes: int = DEFAULT_MAX_SPIKES) -> NewSpikes:
    """mexGetSpikes2: spikes that the generic templates find in ``data``, and their snippets.

    Args:
        data: (NT, Nchan) float32 batch (the residual drez, or dataRAW on the first batch), numpy
            (CPU twin) or cupy (CUDA kernels), any memory layout. MATLAB's 2nd argument.
        templates: (nt0, Nrank) generic temporal templates (wTEMP, Nrank = NrankPC = 6); cast to
            float32. MATLAB's 3rd argument; nt0 and Nrank replace Params[4] and Params[14].
        iC: (NchanNear, Nchan) integer neighbour channels, 0-based, nearest first (MATLAB passes
            iC-1; NchanNear replaces Params[10]).
        th: detection threshold on the summed projection (ops.Th(1), Params[2]); peaks need a
            score above float32(th)^2.
        n_sum: neighbourhood sizes tried, 1..n_sum channels (Params[13], min(Nchan, 7) in the
            caller); at most NchanNear.
        max_spikes: capacity for candidate peaks per batch (the original's maxFR).

    NT (Params[0]) and Nchan (Params[9]) are data's shape; Params[5] (Nnearest) only sized thread
    blocks of kernels the mex never launches, and the other Params entries are not read.

    Returns:
        :class:`NewSpikes` (snippets, cmap, times, channels, heights), spikes sorted by time.

    Raises:
        SpikeCapacityError: more than ``max_spikes`` candidate peaks in the batch.
    """
    NT, n_chan = _check_data(data)
    W = _as_float32_2d(templates, "templates")
    nt0 = W.shape[0]
    if not 1 <= nt0 <= NT:
        raise ValueError(f"templates have {nt0} samples; need 1 <= nt0 <= NT = {NT}")
    iC = _check_neighbours(iC, n_chan, n_sum)
    if int(max_spikes) < 0:
        raise ValueError(f"max_spikes must be >= 0, got {max_spikes}")
    th2 = np.float32(th) * np.float32(th)  # the original squares the float32 threshold
    cov = mex_coverage(NT, nt0)
    return dispatch("getspikes", data)(data, W, iC, int(n_sum), th2, int(max_spikes), cov)


def _check_data(data) -> tuple[int, int]:
    if data.ndim != 2:
        raise ValueError(f"data must be 2-D (NT, Nchan), got shape {data.shape}")
    if data.dtype != np.float32:
        raise TypeError(f"data must be float32 (the original works in single precision), got {data.dtype}")
    if data.shape[1] == 0:
        raise ValueError("data has no channels")
    return data.shape


def _as_float32_2d(a, name) -> np.ndarray:
    a = np.asarray(a.get() if hasattr(a, "get") else a, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    return np.asfortranarray(a)  # columns (one template each) contiguous


def _check_neighbours(iC, n_chan, n_sum) -> np.ndarray:
    iC = np.asarray(iC.get() if hasattr(iC, "get") else iC)
    if iC.ndim != 2 or iC.shape[1] != n_chan or not np.issubdtype(iC.dtype, np.integer):
        raise ValueError(f"iC must be an integer (NchanNear, Nchan={n_chan}) array, got "
                         f"{iC.dtype} {iC.shape}")
    if iC.size and (iC.min() < 0 or iC.max() >= n_chan):
        raise ValueError(f"iC must hold 0-based channel indices in [0, {n_chan}) (MATLAB's iC-1); "
                         f"got values in [{iC.min()}, {iC.max()}]")
    if not 1 <= int(n_sum) <= iC.shape[0]:
        raise ValueError(f"n_sum={n_sum} must be between 1 and NchanNear={iC.shape[0]}")
    return np.asfortranarray(iC, dtype=np.int32)


def _check_capacity(n_found: int, max_spikes: int):
    if n_found > max_spikes:
        raise SpikeCapacityError(
            f"mexGetSpikes2 found {n_found} candidate spikes in one batch, more than "
            f"max_spikes={max_spikes} (the original's maxFR, beyond which it silently keeps an "
            f"arbitrary subset); raise max_spikes to at least {n_found}.")


# ------------------------------------------------------------------------------ CPU (numba)
@numba.njit(cache=True, nogil=True)
def _correlate_into(p, x, w, t0, m):
    """p[u] += w[i] * x[t0 + u + i] for i = 0, 1, ... in order, u < m (p zero: the projection).
    Four taps per pass in one left-to-right expression: the same roundings as one tap per pass,
    with a quarter of the loads and stores of p."""
    nt0 = w.size
    i = 0
    while i + 4 <= nt0:
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        x0, x1 = x[t0 + i:t0 + i + m], x[t0 + i + 1:t0 + i + 1 + m]
        x2, x3 = x[t0 + i + 2:t0 + i + 2 + m], x[t0 + i + 3:t0 + i + 3 + m]
        for u in range(m):
            p[u] = (((p[u] + w0 * x0[u]) + w1 * x1[u]) + w2 * x2[u]) + w3 * x3[u]
        i += 4
    while i < nt0:
        wi, xi = w[i], x[t0 + i:t0 + i + m]
        for u in range(m):
            p[u] += wi * xi[u]
        i += 1


@numba.njit(cache=True, nogil=True)
def _correlate3_into(p, q, s, x, w, v, z, t0, m):
    """_correlate_into for three templates w, v, z at once (into p, q, s): each sum as there,
    with one load of x serving three outputs (isolated, on one EPYC core: 25-27 against
    18-22 G multiply-adds/s for three calls)."""
    nt0 = w.size
    i = 0
    while i + 4 <= nt0:
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        v0, v1, v2, v3 = v[i], v[i + 1], v[i + 2], v[i + 3]
        z0, z1, z2, z3 = z[i], z[i + 1], z[i + 2], z[i + 3]
        x0, x1 = x[t0 + i:t0 + i + m], x[t0 + i + 1:t0 + i + 1 + m]
        x2, x3 = x[t0 + i + 2:t0 + i + 2 + m], x[t0 + i + 3:t0 + i + 3 + m]
        for u in range(m):
            a0, a1, a2, a3 = x0[u], x1[u], x2[u], x3[u]
            p[u] = (((p[u] + w0 * a0) + w1 * a1) + w2 * a2) + w3 * a3
            q[u] = (((q[u] + v0 * a0) + v1 * a1) + v2 * a2) + v3 * a3
            s[u] = (((s[u] + z0 * a0) + z1 * a1) + z2 * a2) + z3 * a3
        i += 4
    while i < nt0:
        wi, vi, zi, xi = w[i], v[i], z[i], x[t0 + i:t0 + i + m]
        for u in range(m):
            p[u] += wi * xi[u]
            q[u] += vi * xi[u]
            s[u] += zi * xi[u]
        i += 1


@numba.njit(cache=True, nogil=True)
def _correlate_ranks(out, c, x, W, t0, m):
    """out[r, c, u] += sum_i W[i, r] x[t0 + u + i] for every column r of W, u < m (out zero
    there: the projections of channel c on all ranks), each sum in index order; three ranks per
    pass over x. out is a C-ordered (Nrank, Nchan, >= m) array, so each out[r, c] is contiguous
    (a strided view would not vectorise)."""
    n_rank = W.shape[1]
    r = 0
    while r + 3 <= n_rank:
        _correlate3_into(out[r, c], out[r + 1, c], out[r + 2, c], x, W[:, r], W[:, r + 1],
                         W[:, r + 2], t0, m)
        r += 3
    while r < n_rank:
        _correlate_into(out[r, c], x, W[:, r], t0, m)
        r += 1


@numba.njit(parallel=True, cache=True, nogil=True)
def _scores_twin(data, W, iC, n_sum, n_conv, chunk, cmap):
    """cmap[t, c] for t < n_conv (stages 1-2), chunk samples at a time; cmap must hold zeros
    beyond n_conv. Vectorised over t, so each sum still runs in the original's order; the inner
    loops run on 1-D views, which LLVM vectorises (2-D indexing there is ~8x slower). W is
    Fortran-ordered so that its columns are contiguous."""
    n_chan = data.shape[1]
    nt0, n_rank = W.shape
    for k in numba.prange((n_conv + chunk - 1) // chunk):
        t0 = k * chunk
        m = min(chunk, n_conv - t0)
        proj = np.zeros((n_rank, n_chan, chunk), np.float32)
        for c in range(n_chan):
            _correlate_ranks(proj, c, data[:, c], W, t0, m)
        acc = np.empty(chunk, np.float32)
        best = np.empty(chunk, np.float32)
        for c in range(n_chan):
            best[:] = 0
            for r in range(n_rank):
                acc[:] = 0
                for j in range(n_sum):
                    p = proj[r, iC[j, c]]
                    size = np.float32(1 + j)
                    for u in range(m):
                        acc[u] += p[u]
                        # fmax vectorises where an if or a select does not (7x here); scores
                        # are never -0 and a NaN one loses either way, so it keeps the same best
                        best[u] = np.fmax(best[u], acc[u] * acc[u] / size)
            cmap[t0:t0 + m, c] = best[:m]


@numba.njit(parallel=True, cache=True, nogil=True)
def _best_channel_twin(cmap, stride, block):
    """Stage 3: err, ftype (NT,) with the never-reset running best of a grid-stride loop."""
    NT, n_chan = cmap.shape
    err = np.zeros(NT, np.float32)
    ftype = np.zeros(NT, np.int64)
    for b in numba.prange((stride + block - 1) // block):
        r0 = b * block
        m = min(block, stride - r0)
        best = np.zeros(block, np.float32)
        ibest = np.zeros(block, np.int64)
        t0 = r0
        while t0 < NT:  # the same lanes r0..r0+m-1 carry their best from one pass to the next
            mm = min(m, NT - t0)
            for c in range(n_chan):
                for u in range(mm):
                    v = cmap[t0 + u, c]
                    if np.float64(v) > np.float64(best[u]) + 1e-6:
                        best[u] = v
                        ibest[u] = c
            err[t0:t0 + mm] = best[:mm]
            ftype[t0:t0 + mm] = ibest[:mm]
            t0 += stride
    return err, ftype


@numba.njit(parallel=True, cache=True, nogil=True)
def _local_peaks_twin(err, lockout, t_start, t_stop, th2):
    """Stage 4: bool (NT,) marking samples above th2 not exceeded within +-lockout."""
    is_peak = np.zeros(err.size, np.bool_)
    for t in numba.prange(t_start, t_stop):
        e = err[t]
        if e > th2:
            highest = True
            for j in range(-lockout, lockout + 1):
                if err[t + j] > e:
                    highest = False
                    break
            is_peak[t] = highest
    return is_peak


@numba.njit(cache=True, nogil=True)
def _keep_highest_twin(chans, heights, chan_range):
    """Stage 5: keep[k] unless a candidate on a channel < chan_range away is strictly higher."""
    n = chans.size
    keep = np.ones(n, np.bool_)
    for k in range(n):
        for m in range(n):
            if abs(chans[m] - chans[k]) < chan_range and heights[k] < heights[m]:
                keep[k] = False
                break
    return keep


def _extract_snippets(xp, data, times, nt0):
    """Stage 6: (nt0, Nchan, n) Fortran float32, snippets[i, c, k] = data[times[k] + i, c]."""
    rows = times[None, :] + xp.arange(nt0)[:, None]          # (nt0, n)
    return xp.asfortranarray(data[rows, :].transpose(0, 2, 1))


@register("getspikes", "cpu")
def _getspikes_cpu(data, W, iC, n_sum, th2, max_spikes, cov):
    data = np.asfortranarray(data)
    NT, n_chan = data.shape
    cmap = np.zeros((NT, n_chan), np.float32, order="F")
    _scores_twin(data, W, iC, n_sum, cov.n_conv, _CHUNK, cmap)
    err, ftype = _best_channel_twin(cmap, cov.stride, 64)
    is_peak = _local_peaks_twin(err, cov.lockout, cov.peak_start, cov.peak_stop, th2)
    times = np.flatnonzero(is_peak).astype(np.int64)
    _check_capacity(times.size, max_spikes)
    chans, heights = ftype[times], err[times]
    keep = _keep_highest_twin(chans, heights, _CHANNEL_RANGE)
    times, chans, heights = times[keep], chans[keep], heights[keep]
    return NewSpikes(_extract_snippets(np, data, times, W.shape[0]), cmap, times, chans, heights)


# ------------------------------------------------------------------------------ CUDA (CuPy)
_SHARED_BYTES = 48 * 1024  # static shared memory a block may use


def _module(nt0, n_rank):
    nt0_max, rank_max = max(_NT0_MAX, nt0), max(_NRANK_MAX, n_rank)
    if 4 * (nt0_max * rank_max + _THREADS + nt0_max) > _SHARED_BYTES:
        raise ValueError(f"templates of {nt0} samples x {n_rank} ranks do not fit the shared memory "
                         "of getspikes_project; use shorter templates (nt0) or fewer of them")
    defines = (("GS_THREADS", _THREADS), ("GS_NT0_MAX", nt0_max), ("GS_NRANK_MAX", rank_max))
    return cuda_module("getspikes.cu", defines)


def _blocks(n, threads):
    return (max(1, (n + threads - 1) // threads),)


@register("getspikes", "cuda")
def _getspikes_cuda(data, W, iC, n_sum, th2, max_spikes, cov):
    import cupy

    data = cupy.asfortranarray(data)
    mod = _module(*W.shape)
    cmap = _cuda_scores(mod, data, W, iC, n_sum, cov)
    times, chans, heights = _cuda_peaks(mod, cmap, th2, max_spikes, cov)
    keep = cupy.empty(times.size, cupy.bool_)
    if times.size:
        mod.get_function("getspikes_keep_highest")(
            _blocks(times.size, _THREADS), (_THREADS,),
            (chans, heights, keep, np.int32(times.size), np.int32(_CHANNEL_RANGE)))
    times, chans, heights = times[keep], chans[keep], heights[keep]
    snippets = _cuda_extract(mod, data, times, W.shape[0])
    return NewSpikes(snippets, cmap, times.astype(cupy.int64), chans.astype(cupy.int64), heights)


def _cuda_scores(mod, data, W, iC, n_sum, cov):
    """Stages 1-2 on the GPU: cmap (NT, Nchan) float32, Fortran order."""
    import cupy

    NT, n_chan = data.shape
    nt0, n_rank = W.shape
    i32 = np.int32
    if cov.n_conv > 0:  # projections are read only for t < n_conv: no need to zero the rest
        proj = cupy.empty((NT, n_chan, n_rank), cupy.float32, order="F")
        mod.get_function("getspikes_project")(
            ((cov.n_conv + _THREADS - 1) // _THREADS, n_chan), (_THREADS,),
            (data, cupy.asarray(W, order="F"), proj, i32(NT), i32(n_chan), i32(nt0), i32(n_rank),
             i32(cov.n_conv)))
    else:
        proj = cupy.zeros(1, cupy.float32)  # never read
    cmap = cupy.empty((NT, n_chan), cupy.float32, order="F")
    mod.get_function("getspikes_sum_channels")(
        (_blocks(NT, _THREADS)[0], n_chan), (_THREADS,),
        (proj, cupy.asarray(iC, order="F"), cmap, i32(NT), i32(n_chan), i32(iC.shape[0]),
         i32(n_rank), i32(n_sum), i32(cov.n_conv)))
    return cmap


def _cuda_extract(mod, data, times, nt0):
    """Stage 6 on the GPU: (nt0, Nchan, n) float32 snippets, Fortran order."""
    import cupy

    NT, n_chan = data.shape
    snippets = cupy.empty((nt0, n_chan, times.size), cupy.float32, order="F")
    if times.size:
        mod.get_function("getspikes_extract")(
            _blocks(snippets.size, _THREADS), (_THREADS,),
            (data, times, snippets, np.int32(NT), np.int32(n_chan), np.int32(nt0),
             np.int32(times.size)))
    return snippets


def _cuda_peaks(mod, cmap, th2, max_spikes, cov):
    """Stages 3-4 on the GPU: candidate (times, chans, heights) int32/int32/float32, by time."""
    import cupy

    NT, n_chan = cmap.shape
    i32 = np.int32
    err = cupy.zeros(NT, cupy.float32)   # the original zero-fills; stride 0 launches nothing
    ftype = cupy.zeros(NT, cupy.int32)
    if cov.stride > 0:
        mod.get_function("getspikes_best_channel")(
            _blocks(cov.stride, _THREADS), (_THREADS,),
            (cmap, err, ftype, i32(NT), i32(n_chan), i32(cov.stride)))
    cap = max(1, max_spikes)
    times = cupy.empty(cap, cupy.int32)
    chans = cupy.empty(cap, cupy.int32)
    heights = cupy.empty(cap, cupy.float32)
    counter = cupy.zeros(1, cupy.int32)
    n_test = cov.peak_stop - cov.peak_start
    if n_test > 0:
        mod.get_function("getspikes_local_peaks")(
            _blocks(n_test, _THREADS), (_THREADS,),
            (err, ftype, times, chans, heights, counter, i32(cov.peak_start), i32(cov.peak_stop),
             i32(cov.lockout), np.float32(th2), i32(max_spikes)))
    n = int(counter.get()[0])
    _check_capacity(n, max_spikes)
    order = cupy.argsort(times[:n])  # atomic order -> time order (times are unique)
    return times[:n][order], chans[:n][order], heights[:n][order]
