"""spikedetector: spikes found by generic rank-one templates (Kilosort 2.5's spikedetector3 mex).

standalone_detector calls ``[dout, kkmax, st, cF] = spikedetector3(Params, dataRAW, wTEMP, iC-1,
dist, v2, iC2-1, dist2)`` on every batch. A generic template is a temporal prototype (a column
of wTEMP) times a Gaussian footprint of one of 5 widths centred on a point of a grid finer than
the channels ("centre"). The computation, stage by stage (the original's kernel in brackets):

1. filter [Conv1D]: ``dfilt[t, c, r] = sum_i W[i, r] * data[t + i, c]`` (a correlation, float32,
   summed in order of i);
2. scores [sumChannels]: for centre u and rank r, ``a[k] = sum_j sA[k, j, u] * dfilt[t, iC[j, u], r]``
   (in order of j) with the footprint weights ``sA[k, j, u] = exp(-dist[j, u]^2 / ((1+k)^2 sig^2))``;
   ``dout[t, u]`` is the largest ``max(a[k], 0)^2 / v2[k, u]`` over r then k (strictly greater
   replaces, starting from 0) and ``kkmax[t, u] = r + k * Nrank`` the one that gave it;
3. window max [max1D]: ``dmax[t + nt0min, u] = max(0, dout[t : t + 2*nt0min, u])`` where that
   exceeds float32(spk_th)^2, else 0;
4. spikes [maxChannels]: (t, u) with ``dmax[t, u] > spk_th^2`` that no centre ``iC2[j, u]``
   (j >= 1, ``dist2[j, u] < 100``) exceeds at t, and where ``dout[t, u] > dmax[t, u] - 1e-6`` (in
   double): the peak of its own window. Per spike: time t, centre u, amplitude ``(int)
   sqrt(double(dout[t, u]))``, kk = kkmax[t, u] and features ``dfilt[t, iC[:, u], kk % Nrank]``.

Quirks of the original's launch geometry, reproduced on purpose on both devices (the sample ranges
are computed once on the host, :func:`detector_coverage`, so the kernels stay free of them):

- the filter and the window max run over 1024-sample tiles while a tile plus nt0 samples fits:
  only ``t < n_conv = 1024 * floor((NT - nt0) / 1024)``; dfilt is 0 beyond, so dout is 0 there;
- the scores and the spike search are launched on floor(NT / 1024) blocks: a batch of fewer than
  1024 samples gets no scores and no spikes at all (dout 0); otherwise the scores cover every
  t < NT (a grid-stride loop) and the spike search t < NT - nt0 - nt0min;
- so spikes are only found in [nt0min, min(n_conv + nt0min, NT - nt0 - nt0min)).

Numerics (both devices agree bit for bit; documented differences from a GPU run of the original):

- products and sums are rounded separately (no FMA), in the original's order; nvcc contracts the
  original's ``y += w * x`` into FMAs, so filter values and scores may differ from a GPU run of it
  in the last bits;
- the footprint weights sA are computed once on the host, correctly rounded (float64 exp of the
  float32 argument, then rounded to float32); the original evaluates CUDA's expf, within 2 ulp.

Spikes only (``keep_scores=False``, what datashift asks for): the CPU twin skips a rank's footprint
sums over 16-sample pieces where a Cauchy-Schwarz bound proves every score below the threshold
(:func:`_pruning`); at 384 channels it computes about 5% of them and the detector runs 5x faster
(benchmarks/bench_detector.py). dout and kkmax are then not returned; the spikes and their outputs
are the same bit for bit. The window max and the spike search visit only the samples above the
threshold in both modes.

The original's other limits (nt0 <= 81, Nrank <= 6, NchanNear <= 20, from fixed shared arrays) do
not apply here. 2 * nt0min <= nt0 + 1 is required: beyond, the original's window max reads shared
memory it never loaded. The original returns spikes in atomicAdd order and silently keeps at most
maxFR = 10000 (:data:`ORIGINAL_MAX_SPIKES`) of them, an arbitrary subset; here spikes are sorted by
(time, centre) and ``max_spikes`` keeps the first ones in that order (``None``: all of them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from .getspikes import _correlate_ranks
from .registry import cuda_module, dispatch, register

__all__ = ["detect_generic_spikes", "GenericSpikes", "DetectorCoverage", "detector_coverage",
           "footprint_weights", "ORIGINAL_MAX_SPIKES", "NSIZES"]

ORIGINAL_MAX_SPIKES = 10000  # the original's maxFR: its silent cap on spikes per batch
NSIZES = 5                   # footprint widths sig * (1..5): the rows of v2
_MEX_THREADS = 1024          # the original's Nthreads: its tiles and grids set the covered ranges
_NEIGHBOUR_RADIUS = 100.0    # maxChannels: centres closer than this (um) compete for a spike
_SCORE_CHUNK = 256           # CPU twin: samples per work item of the filter and the scores
_PRUNE_STEP = 16             # CPU twin, keep_scores=False: samples per piece proved below threshold
_SCAN_STEP = 64              # CPU twin: samples the window max tests at once for a value > th2
_PRUNE_MARGIN = 1e-3         # relative slack of that proof over float32 rounding (< 1e-5 relative)
_THREADS = 256               # CUDA threads per block (any value works: results do not depend on it)
_INITIAL_CAPACITY = ORIGINAL_MAX_SPIKES  # CUDA: first size of the spike buffer (grown if needed)
_MAX_GRID_Y = 65535          # CUDA: centres (and channels) run on the grid's y dimension
_INT_MAX = 2**31 - 1         # amplitudes are C ints: sqrt(dout) saturates as CUDA's conversion


class GenericSpikes(NamedTuple):
    """Output of :func:`detect_generic_spikes`; arrays on the input's device.

    dout:       (NT, NchanUp) float32, Fortran order: best score per sample and centre.
    kkmax:      (NT, NchanUp) int32, Fortran order: r + k*Nrank of that best score.
    times:      (n,) int64: 0-based sample within the batch (the mex's st(1,:)).
    centres:    (n,) int64: 0-based centre index (st(2,:)).
    amplitudes: (n,) int64: (int) sqrt(double(dout)) at the spike (st(3,:)).
    kk:         (n,) int64: kkmax at the spike (st(4,:)).
    features:   (NchanNear, n) float32, Fortran order: the filtered data of rank kk % Nrank on
                the centre's channels iC[:, u] (the mex's cF).
    n_found:    spikes found before the ``max_spikes`` cap.
    Spikes are sorted by (time, centre).
    """
    dout: object
    kkmax: object
    times: object
    centres: object
    amplitudes: object
    kk: object
    features: object
    n_found: int


@dataclass(frozen=True)
class DetectorCoverage:
    """Sample ranges the original's launch geometry gives each stage (see the module docstring)."""
    n_conv: int   # filter and window max: t < n_conv
    n_score: int  # scores: t < n_score (NT, or 0: no block launched)
    n_peak: int   # spike search: t < n_peak


def detector_coverage(NT: int, nt0: int, nt0min: int) -> DetectorCoverage:
    """The covered ranges of spikedetector3 for a batch of NT samples, templates of nt0 samples."""
    tile = _MEX_THREADS
    # Conv1D / max1D: tiles start at 0, 1024, ... while start + 1024 + nt0 - 1 <= NT - 1
    n_conv = tile * max(0, (NT - nt0) // tile)
    # sumChannels / maxChannels: grids of NT/1024 blocks (none if NT < 1024) striding over t
    launched = NT // tile > 0
    n_score = NT if launched else 0
    n_peak = max(0, NT - nt0 - nt0min) if launched else 0
    return DetectorCoverage(n_conv, n_score, n_peak)


def footprint_weights(dist, sig: float) -> np.ndarray:
    """sA (NSIZES, NchanNear, NchanUp) float32: ``exp(-d^2 / ((1+k)^2 sig^2))`` for d = dist[j, u].

    The argument is evaluated in float32 in the original's order, ``-(d*d) / (((1+k)^2 * sig) *
    sig)``; the exponential is correctly rounded (the original's CUDA expf is within 2 ulp)."""
    d = np.asarray(dist, np.float32)
    sig = np.float32(sig)
    k = np.arange(1, NSIZES + 1, dtype=np.float32)
    denom = (k * k * sig) * sig                               # (NSIZES,)
    arg = -(d * d)[None, :, :] / denom[:, None, None]          # float32 throughout
    # Fortran order: sA[k + NSIZES * (j + NchanNear * u)], the sizes of one channel together
    return np.asfortranarray(np.exp(arg.astype(np.float64)).astype(np.float32))


def detect_generic_spikes(data, *, templates, iC, dist, v2, iC2, dist2, nt0min: int,
                          spk_th: float, sig: float, max_spikes: int | None = None,
                          keep_scores: bool = True) -> GenericSpikes:
    """spikedetector3: spikes of ``data`` that the generic templates find, with their features.

    Args (as the mex receives them, indices 0-based):
        data: (NT, Nchan) float32 batch, numpy (CPU twin) or cupy (CUDA kernels), any layout.
        templates: (nt0, Nrank) temporal prototypes (wTEMP); cast to float32.
        iC: (NchanNear, NchanUp) integer channels around each centre, in [0, Nchan).
        dist: (NchanNear, NchanUp) their distances to the centre (um); cast to float32.
        v2: (NSIZES=5, NchanUp) squared norm of each footprint; cast to float32.
        iC2: (NchanNearUp, NchanUp) integer centres around each centre, in [0, NchanUp), the
            centre itself first (row 0 is skipped, as in the original).
        dist2: (NchanNearUp, NchanUp) their distances (um); cast to float32.
        nt0min: samples before the trough (Params[5]); the window max spans 2 * nt0min samples.
        spk_th: threshold on the template amplitude (Params[6]); scores need > float32(spk_th)^2.
        sig: base footprint width (Params[9]), um.
        max_spikes: keep the first ``max_spikes`` spikes in (time, centre) order; ``None`` keeps
            all (the original keeps an arbitrary ORIGINAL_MAX_SPIKES).
        keep_scores: False returns ``dout`` and ``kkmax`` as None and lets the CPU twin skip the
            scores it can prove are below the threshold (:func:`_pruning`): the spikes and their
            outputs are the same, bit for bit.

    NT, Nchan, nt0, Nrank, NchanNear, NchanUp, NchanNearUp (Params 0-4, 7, 8) are the shapes.

    Returns:
        :class:`GenericSpikes`, spikes sorted by (time, centre).
    """
    NT, n_chan = _check_data(data)
    W = _as_float32_2d(templates, "templates")
    nt0, n_rank = W.shape
    if nt0 > NT:
        raise ValueError(f"templates have nt0={nt0} samples, more than the batch's NT={NT}")
    iC = _check_index(iC, "iC", n_rows=None, n_cols=None, upper=n_chan, what="channel")
    n_near, n_up = iC.shape
    dist = _check_float(dist, "dist", iC.shape)
    v2 = _check_float(v2, "v2", (NSIZES, n_up))
    iC2 = _check_index(iC2, "iC2", n_rows=None, n_cols=n_up, upper=n_up, what="centre")
    dist2 = _check_float(dist2, "dist2", iC2.shape)
    nt0min = _check_nt0min(nt0min, nt0)
    th2 = _check_threshold(spk_th)
    sA = footprint_weights(dist, _check_sig(sig))
    max_spikes = _check_max_spikes(max_spikes)
    cov = detector_coverage(NT, nt0, nt0min)
    res = dispatch("spikedetector", data)(data, W, iC, sA, v2, iC2, dist2, nt0min, th2,
                                          max_spikes, cov, _pruning(sA, v2, th2, keep_scores))
    return res if keep_scores else res._replace(dout=None, kkmax=None)


def _pruning(sA, v2, th2, keep_scores: bool) -> tuple[np.ndarray, float]:
    """(bound (NchanUp,) float64, cut): the CPU twin skips a rank's footprint sums over a piece
    of samples where ``bound[u] * sum_j max_t dfilt[t, iC[j, u]]^2 < cut``; cut = 0: no pruning.

    Why that is safe: by Cauchy-Schwarz, a score ``max(a_k, 0)^2 / v2[k, u]`` with ``a_k = sum_j
    sA[k, j, u] x_j`` is at most ``(sum_j sA[k, j, u]^2 / v2[k, u]) * sum_j x_j^2`` (the ratio is
    1 for the original's v2, but v2 is an input); float32 rounding adds < 1e-5 relative, the
    margin 1e-3. Only scores above th2 - 1e-6 can make or shape a spike (the window max keeps
    values above th2; a spike's own score is within 1e-6 of it), so ``cut = th2 - 1e-5``.
    Skipped scores are left 0: dout and kkmax then differ from the full ones below the cut only.
    """
    n_up = v2.shape[1]
    if keep_scores or not th2 > 1e-5:
        return np.zeros(n_up), 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (np.square(sA.astype(np.float64)).sum(axis=1) / v2.astype(np.float64)).max(axis=0)
    bound = np.where(np.isfinite(ratio), ratio, np.inf) * (1 + _PRUNE_MARGIN)
    return np.ascontiguousarray(bound), float(th2) - 1e-5


# ------------------------------------------------------------------------------ validation
def _host(a):
    return a.get() if hasattr(a, "get") else a


def _check_data(data) -> tuple[int, int]:
    if getattr(data, "ndim", None) != 2:
        raise ValueError(f"data must be a 2-D (NT, Nchan) array, got shape {getattr(data, 'shape', None)}")
    if data.dtype != np.float32:
        raise TypeError(f"data must be float32 (the original works in single precision), got {data.dtype}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"data is empty: shape {data.shape}")
    return data.shape


def _as_float32_2d(a, name) -> np.ndarray:
    a = np.asarray(_host(a))
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got {a.dtype}")
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    return np.asfortranarray(a, dtype=np.float32)  # columns contiguous


def _check_index(a, name, *, n_rows, n_cols, upper, what) -> np.ndarray:
    a = np.asarray(_host(a))
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer {what} indices, got {a.dtype}")
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    if n_cols is not None and a.shape[1] != n_cols:
        raise ValueError(f"{name} must have one column per centre (NchanUp={n_cols}), got shape {a.shape}")
    if a.min() < 0 or a.max() >= upper:
        raise ValueError(f"{name} must hold 0-based {what} indices in [0, {upper}) (MATLAB's "
                         f"{name}-1); got values in [{a.min()}, {a.max()}]")
    return np.asfortranarray(a, dtype=np.int32)


def _check_float(a, name, shape) -> np.ndarray:
    a = _as_float32_2d(a, name)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    return a


def _check_nt0min(nt0min, nt0) -> int:
    nt0min = int(nt0min)
    if nt0min < 0 or 2 * nt0min > nt0 + 1:
        raise ValueError(f"nt0min={nt0min} must satisfy 0 <= 2*nt0min <= nt0 + 1 = {nt0 + 1}: the "
                         "window max spans 2*nt0min samples of a tile loaded with nt0 extra ones")
    return nt0min


def _check_threshold(spk_th) -> np.float32:
    if not math.isfinite(float(spk_th)):
        raise ValueError(f"spk_th must be finite, got {spk_th}")
    th = np.float32(spk_th)
    return th * th  # the original squares the float32 threshold in float32


def _check_sig(sig) -> float:
    if not (math.isfinite(float(sig)) and float(sig) > 0):
        raise ValueError(f"sig must be a positive finite width (um), got {sig}")
    return float(sig)


def _check_max_spikes(max_spikes) -> int | None:
    if max_spikes is None:
        return None
    if isinstance(max_spikes, bool) or int(max_spikes) != max_spikes or max_spikes < 0:
        raise ValueError(f"max_spikes must be None or an integer >= 0, got {max_spikes!r}")
    return int(max_spikes)


def _sorted_and_capped(xp, times, centres, n_up, max_spikes):
    """Order of the spikes by (time, centre) (times and centres are unique pairs), capped."""
    key = times.astype(xp.int64) * n_up + centres.astype(xp.int64)
    order = xp.argsort(key)
    return order if max_spikes is None else order[:max_spikes]


# ------------------------------------------------------------------------------ CPU (numba)
@numba.njit(parallel=True, cache=True, nogil=True)
def _scores_twin(data, W, iC, sA, v2, n_conv, n_score, chunk, dout, kkmax, bound, cut):
    """Stages 1-2: dout[t, u], kkmax[t, u] for t < n_score (both must hold zeros), chunk
    samples at a time. Vectorised over t (inner loops on contiguous 1-D views), so every sum
    still runs in the original's order. dfilt of the chunk is zero past n_conv.

    Pruning (``cut`` > 0; see :func:`_pruning`): a rank's footprint sums are skipped over the
    _PRUNE_STEP-sample pieces where ``bound[u] * sum_j max_t dfilt^2`` proves that none of its
    scores reaches ``cut``; they would never have been the best score of a spike there."""
    n_chan = data.shape[1]
    n_rank = W.shape[1]
    n_near, n_up = iC.shape
    n_piece = (chunk + _PRUNE_STEP - 1) // _PRUNE_STEP
    for b in numba.prange((n_score + chunk - 1) // chunk):
        t0 = b * chunk
        m = min(chunk, n_score - t0)
        m_conv = max(0, min(m, n_conv - t0))
        dfilt = np.zeros((n_rank, n_chan, chunk), np.float32)
        for c in range(n_chan):
            _correlate_ranks(dfilt, c, data[:, c], W, t0, m_conv)
        energy = np.empty((n_rank, n_chan, n_piece), np.float64)
        if cut > 0:
            _piece_energy(energy, dfilt, m)
        acc = np.empty((NSIZES, chunk), np.float32)
        best = np.empty(chunk, np.float32)
        kbest = np.empty(chunk, np.int32)
        keep = np.empty(n_piece, np.bool_)
        scored = np.empty(n_piece, np.bool_)  # pieces where some rank was summed
        for u in range(n_up):
            best[:] = 0
            kbest[:] = 0
            scored[:] = cut <= 0
            for r in range(n_rank):
                if cut > 0:
                    _pieces_to_keep(keep, energy[r], iC[:, u], bound[u], cut, m)
                    scored |= keep
                else:
                    keep[:] = True
                lo = 0
                while lo < m:  # runs of kept pieces, each summed in one vectorised pass
                    p = lo // _PRUNE_STEP
                    if not keep[p]:
                        lo += _PRUNE_STEP
                        continue
                    q = p + 1
                    while q < n_piece and keep[q]:
                        q += 1
                    hi = min(m, q * _PRUNE_STEP)
                    _footprint_sums(acc, dfilt[r], iC[:, u], sA[:, :, u], lo, hi)
                    _keep_best(best, kbest, acc, v2[:, u], r, n_rank, lo, hi)
                    lo = hi
            for p in range(n_piece):  # the rest stays the caller's zeros, pages unwritten
                if scored[p]:
                    lo, hi = t0 + p * _PRUNE_STEP, t0 + min(m, (p + 1) * _PRUNE_STEP)
                    dout[lo:hi, u] = best[lo - t0:hi - t0]
                    kkmax[lo:hi, u] = kbest[lo - t0:hi - t0]


@numba.njit(cache=True, nogil=True)
def _piece_energy(energy, dfilt, m):
    """energy[r, c, p] = max of dfilt[r, c, t]^2 (float64) over piece p's samples t < m; NaN
    propagates (a NaN piece is never skipped)."""
    n_rank, n_chan, _ = dfilt.shape
    for r in range(n_rank):
        for c in range(n_chan):
            x = dfilt[r, c]
            for p in range((m + _PRUNE_STEP - 1) // _PRUNE_STEP):
                e = 0.0
                for t in range(p * _PRUNE_STEP, min(m, (p + 1) * _PRUNE_STEP)):
                    y = np.float64(x[t]) * np.float64(x[t])
                    e = e if y <= e else y
                energy[r, c, p] = e


@numba.njit(cache=True, nogil=True)
def _pieces_to_keep(keep, energy, chans, bound, cut, m):
    """keep[p]: piece p cannot be proved to score below ``cut`` (NaN bounds are kept)."""
    for p in range((m + _PRUNE_STEP - 1) // _PRUNE_STEP):
        e = 0.0
        for j in range(chans.size):
            e += energy[chans[j], p]
        keep[p] = not (bound * e < cut)


@numba.njit(cache=True, nogil=True)
def _footprint_sums(acc, x, chans, weights, lo, hi):
    """acc[k, lo:hi] = sum_j weights[k, j] * x[chans[j], lo:hi], summed in order of j, every product
    and sum rounded separately. The 5 sizes share each pass over t, and a pass adds 3 channels
    in one left-to-right expression: the same roundings as one channel per pass with a third of
    the loads and stores of acc (the loop is then bound by the arithmetic)."""
    a0, a1, a2, a3, a4 = acc[0], acc[1], acc[2], acc[3], acc[4]
    a0[lo:hi] = 0
    a1[lo:hi] = 0
    a2[lo:hi] = 0
    a3[lo:hi] = 0
    a4[lo:hi] = 0
    n = chans.size
    j = 0
    while j + 3 <= n:
        xp, xq, xr = x[chans[j]], x[chans[j + 1]], x[chans[j + 2]]
        p0, p1, p2, p3, p4 = weights[0, j], weights[1, j], weights[2, j], weights[3, j], weights[4, j]
        j += 1
        q0, q1, q2, q3, q4 = weights[0, j], weights[1, j], weights[2, j], weights[3, j], weights[4, j]
        j += 1
        r0, r1, r2, r3, r4 = weights[0, j], weights[1, j], weights[2, j], weights[3, j], weights[4, j]
        j += 1
        for t in range(lo, hi):
            vp, vq, vr = xp[t], xq[t], xr[t]
            a0[t] = ((a0[t] + p0 * vp) + q0 * vq) + r0 * vr
            a1[t] = ((a1[t] + p1 * vp) + q1 * vq) + r1 * vr
            a2[t] = ((a2[t] + p2 * vp) + q2 * vq) + r2 * vr
            a3[t] = ((a3[t] + p3 * vp) + q3 * vq) + r3 * vr
            a4[t] = ((a4[t] + p4 * vp) + q4 * vq) + r4 * vr
    while j < n:
        xp = x[chans[j]]
        p0, p1, p2, p3, p4 = weights[0, j], weights[1, j], weights[2, j], weights[3, j], weights[4, j]
        for t in range(lo, hi):
            vp = xp[t]
            a0[t] += p0 * vp
            a1[t] += p1 * vp
            a2[t] += p2 * vp
            a3[t] += p3 * vp
            a4[t] += p4 * vp
        j += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _score(a, v):
    """max(a, 0)^2 / v in float32; fmax(a, 0) makes NaN 0, like the original's max."""
    a = a if a > np.float32(0) else np.float32(0)
    return a * a / v


@numba.njit(cache=True, nogil=True)
def _keep_best(best, kbest, acc, v, r, n_rank, lo, hi):
    """For k = 0..4 in order: where _score(acc[k, t], v[k]) is strictly greater than best[t]
    (NaN never is), it replaces it and kbest[t] = r + k*n_rank; lo <= t < hi. One pass over t
    for all k."""
    a0, a1, a2, a3, a4 = acc[0], acc[1], acc[2], acc[3], acc[4]
    v0, v1, v2, v3, v4 = v[0], v[1], v[2], v[3], v[4]
    l0 = np.int32(r)
    l1, l2, l3, l4 = l0 + n_rank, l0 + 2 * n_rank, l0 + 3 * n_rank, l0 + 4 * n_rank
    for t in range(lo, hi):
        b, kb = best[t], kbest[t]
        s = _score(a0[t], v0)
        b, kb = (s, l0) if s > b else (b, kb)
        s = _score(a1[t], v1)
        b, kb = (s, l1) if s > b else (b, kb)
        s = _score(a2[t], v2)
        b, kb = (s, l2) if s > b else (b, kb)
        s = _score(a3[t], v3)
        b, kb = (s, l3) if s > b else (b, kb)
        s = _score(a4[t], v4)
        b, kb = (s, l4) if s > b else (b, kb)
        best[t], kbest[t] = b, np.int32(kb)


def _window_max(dout, half, n_conv, th2):
    """Stage 3: dmax (NT, NchanUp) float32, Fortran order; dmax[t + half, u] = the max of
    dout[t : t + 2*half, u] (and 0) for t < n_conv where it exceeds th2, else 0.

    numpy's zeros are calloc'ed: the pages :func:`_window_max_twin` leaves untouched (most: dmax
    is sparse) are never written; numba's zeros would memset all of them (0.3 s at 384 channels)."""
    dmax = np.zeros(dout.shape, np.float32, order="F")
    if 2 * half > 0 and n_conv > 0:  # else the max of an empty window, 0, is never above th2
        _window_max_twin(dout, half, n_conv, th2, dmax)
    return dmax


@numba.njit(parallel=True, cache=True, nogil=True)
def _window_max_twin(dout, half, n_conv, th2, dmax):
    """Stage 3 into dmax (zeros, the shape of dout), for 2 * half > 0 and n_conv > 0.

    Only windows holding a value above th2 can exceed it, and those are few (spikes): each
    column is scanned once for such values and only the windows around them are taken (max is
    exact and order-free, so the result is that of a literal scan of every window)."""
    n_up = dout.shape[1]
    w = 2 * half
    span = n_conv + w - 1  # samples read; <= NT because 2*half <= nt0 + 1 and n_conv <= NT - nt0
    for u in numba.prange(n_up):
        x = dout[:span, u]
        col = dmax[:, u]
        done = 0  # windows t < done are settled
        i = _skip_steps_below(x, 0, span, th2)
        while i < span:
            if x[i] > th2:
                for t in range(max(done, i - w + 1), min(i + 1, n_conv)):  # windows holding i
                    y = np.float32(0)
                    for j in range(t, t + w):
                        y = max(y, x[j])
                    col[t + half] = y
                done = max(done, min(i + 1, n_conv))
            i = _skip_steps_below(x, i + 1, span, th2)


@numba.njit(cache=True, nogil=True, inline="always")
def _skip_steps_below(x, i, end, th2):
    """i, moved past the whole _SCAN_STEP-aligned steps of x[:end] where no value exceeds th2
    (each tested by a count without early exit: an integer sum vectorises, a float max does not
    without fast-math)."""
    while i % _SCAN_STEP == 0 and i + _SCAN_STEP <= end:
        n = 0
        for j in range(i, i + _SCAN_STEP):
            n += x[j] > th2
        if n > 0:
            break
        i += _SCAN_STEP
    return i


@numba.njit(cache=True, nogil=True)
def _is_spike(dmax, dout, iC2, dist2, th2, t, u):
    """Stage 4 at (t, u). The original tests the neighbours first and the threshold second;
    neither has side effects, so the cheap threshold goes first (dmax is mostly 0)."""
    cf = dmax[t, u]
    if not cf > th2:
        return False
    for j in range(1, iC2.shape[0]):
        if dist2[j, u] < _NEIGHBOUR_RADIUS and dmax[t, iC2[j, u]] > cf:
            return False
    return np.float64(dout[t, u]) > np.float64(cf) - 1e-6  # in double, as the original


@numba.njit(parallel=True, cache=True, nogil=True)
def _spikes_twin(dmax, dout, iC2, dist2, th2, n_peak):
    """Stage 4: (times, centres) int64 of every spike with t < n_peak, by centre then time
    (counted first, then filled, so that each centre writes its own slice in parallel)."""
    n_up = dmax.shape[1]
    counts = np.zeros(n_up + 1, np.int64)
    none = np.empty(0, np.int64)
    for u in numba.prange(n_up):
        counts[u + 1] = _column_spikes(dmax, dout, iC2, dist2, th2, n_peak, u, none, none, 0)
    starts = np.cumsum(counts)
    times = np.empty(starts[-1], np.int64)
    centres = np.empty(starts[-1], np.int64)
    for u in numba.prange(n_up):
        _column_spikes(dmax, dout, iC2, dist2, th2, n_peak, u, times, centres, starts[u])
    return times, centres


@numba.njit(cache=True, nogil=True)
def _column_spikes(dmax, dout, iC2, dist2, th2, n_peak, u, times, centres, k):
    """The spikes of centre u (t < n_peak), written from index k of times / centres unless they
    are empty; returns their count. Steps of dmax with nothing above th2 are skipped at once."""
    col = dmax[:, u]
    fill = times.size > 0
    n = 0
    t = _skip_steps_below(col, 0, n_peak, th2)  # _is_spike needs dmax above th2
    while t < n_peak:
        if _is_spike(dmax, dout, iC2, dist2, th2, t, u):
            if fill:
                times[k + n] = t
                centres[k + n] = u
            n += 1
        t = _skip_steps_below(col, t + 1, n_peak, th2)
    return n


@numba.njit(parallel=True, cache=True, nogil=True)
def _spike_outputs_twin(data, W, iC, dout, kkmax, n_conv, times, centres):
    """Per spike: amplitude, kk and the features (recomputed here in the filter's order, so
    bit-identical to the stage 1 values; 0 past n_conv as there)."""
    n_near = iC.shape[0]
    nt0, n_rank = W.shape
    n = times.size
    amplitudes = np.empty(n, np.int64)
    kk = np.empty(n, np.int64)
    features = np.zeros((n, n_near), np.float32).T  # (NchanNear, n), Fortran order
    for s in numba.prange(n):
        t, u = times[s], centres[s]
        root = np.sqrt(np.float64(dout[t, u]))  # dout >= 0
        amplitudes[s] = int(root) if root < _INT_MAX else _INT_MAX  # C truncation, saturated
        kk[s] = kkmax[t, u]
        r = kk[s] % n_rank
        if t < n_conv:
            for j in range(n_near):
                x = data[:, iC[j, u]]
                y = np.float32(0)
                for i in range(nt0):
                    y += W[i, r] * x[t + i]
                features[j, s] = y
    return amplitudes, kk, features


@register("spikedetector", "cpu")
def _detect_cpu(data, W, iC, sA, v2, iC2, dist2, nt0min, th2, max_spikes, cov, pruning):
    data = np.asfortranarray(data)
    NT = data.shape[0]
    n_up = iC.shape[1]
    dout = np.zeros((NT, n_up), np.float32, order="F")
    kkmax = np.zeros((NT, n_up), np.int32, order="F")
    _scores_twin(data, W, iC, sA, v2, cov.n_conv, cov.n_score, _SCORE_CHUNK, dout, kkmax, *pruning)
    dmax = _window_max(dout, nt0min, cov.n_conv, th2)
    times, centres = _spikes_twin(dmax, dout, iC2, dist2, th2, cov.n_peak)
    del dmax
    n_found = int(times.size)
    keep = _sorted_and_capped(np, times, centres, n_up, max_spikes)
    times, centres = times[keep], centres[keep]
    amplitudes, kk, features = _spike_outputs_twin(data, W, iC, dout, kkmax, cov.n_conv, times,
                                                   centres)
    return GenericSpikes(dout, kkmax, times, centres, amplitudes, kk, features, n_found)


# ------------------------------------------------------------------------------ CUDA (CuPy)
def _module():
    return cuda_module("spikedetector3.cu", (("SD_NSIZES", NSIZES),))


def _grid(n, n_y):
    if n_y > _MAX_GRID_Y:
        raise ValueError(f"{n_y} centres or channels exceed the CUDA grid's y dimension "
                         f"({_MAX_GRID_Y}); split the probe")
    return (max(1, (n + _THREADS - 1) // _THREADS), n_y)


@register("spikedetector", "cuda")
def _detect_cuda(data, W, iC, sA, v2, iC2, dist2, nt0min, th2, max_spikes, cov, pruning):
    del pruning  # every score is computed: the GPU's scores are not its bottleneck
    import cupy

    data = cupy.asfortranarray(data)
    NT, n_chan = data.shape
    nt0, n_rank = W.shape
    n_near, n_up = iC.shape
    i32 = np.int32
    mod = _module()
    d_iC = cupy.asarray(iC, order="F")
    # the scores read dfilt up to n_score > n_conv: zeros there, as the original's memset
    dfilt = cupy.zeros((NT, n_chan, n_rank), cupy.float32, order="F")
    if cov.n_conv > 0:
        mod.get_function("sd_filter")(
            _grid(cov.n_conv, n_chan), (_THREADS,),
            (data, cupy.asarray(W, order="F"), dfilt, i32(NT), i32(n_chan), i32(nt0), i32(n_rank),
             i32(cov.n_conv)))
    dout = cupy.zeros((NT, n_up), cupy.float32, order="F")
    kkmax = cupy.zeros((NT, n_up), cupy.int32, order="F")
    if cov.n_score > 0:
        mod.get_function("sd_scores")(
            _grid(cov.n_score, n_up), (_THREADS,),
            (dfilt, d_iC, cupy.asarray(sA), cupy.asarray(v2, order="F"), dout, kkmax, i32(NT),
             i32(n_chan), i32(n_near), i32(n_rank), i32(cov.n_score)))
    dmax = cupy.zeros((NT, n_up), cupy.float32, order="F")
    if cov.n_conv > 0:
        mod.get_function("sd_window_max")(
            _grid(cov.n_conv, n_up), (_THREADS,),
            (dout, dmax, i32(NT), i32(nt0min), i32(cov.n_conv), np.float32(th2)))
    times, centres = _cuda_spikes(mod, dmax, dout, iC2, dist2, th2, cov)
    del dmax
    n_found = int(times.size)
    keep = _sorted_and_capped(cupy, times, centres, n_up, max_spikes)
    times, centres = times[keep], centres[keep]
    n = int(times.size)
    amplitudes = cupy.empty(n, cupy.int32)
    kk = cupy.empty(n, cupy.int32)
    features = cupy.empty((n_near, n), cupy.float32, order="F")
    if n:
        mod.get_function("sd_spike_outputs")(
            (max(1, (n + _THREADS - 1) // _THREADS),), (_THREADS,),
            (dfilt, dout, kkmax, d_iC, times, centres, amplitudes, kk, features, i32(NT),
             i32(n_chan), i32(n_near), i32(n_rank), i32(n)))
    return GenericSpikes(dout, kkmax, times.astype(cupy.int64), centres.astype(cupy.int64),
                         amplitudes.astype(cupy.int64), kk.astype(cupy.int64), features, n_found)


def _cuda_spikes(mod, dmax, dout, iC2, dist2, th2, cov):
    """Stage 4 on the GPU: (times, centres) int32 in atomic order. The buffer starts at
    _INITIAL_CAPACITY; if more spikes were counted, the search runs again with room for all."""
    import cupy

    NT, n_up = dmax.shape
    d_iC2, d_dist2 = cupy.asarray(iC2, order="F"), cupy.asarray(dist2, order="F")
    capacity = max(1, _INITIAL_CAPACITY)
    while True:
        times = cupy.empty(capacity, cupy.int32)
        centres = cupy.empty(capacity, cupy.int32)
        counter = cupy.zeros(1, cupy.int32)
        if cov.n_peak > 0:
            mod.get_function("sd_local_maxima")(
                _grid(cov.n_peak, n_up), (_THREADS,),
                (dmax, dout, d_iC2, d_dist2, times, centres, counter, np.int32(NT),
                 np.int32(iC2.shape[0]), np.int32(cov.n_peak), np.float32(th2),
                 np.int32(capacity)))
        n = int(counter.get()[0])
        if n <= capacity:
            return times[:n], centres[:n]
        capacity = n
