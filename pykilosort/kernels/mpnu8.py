"""mpnu8: Kilosort2's template-matching pursuit (mexMPnu8), CUDA kernels + numba twin.

One call processes one batch (NT samples x Nchan channels) against Nfilt rank-``Nrank`` templates
(template f = sum_k W[:, f, k] (x) U[:, f, k]):

1. filter the data with every template: project on its spatial components over the NchanNear
   channels around its main channel (``dprod``), then correlate in time with its temporal
   components (``conv``, one value per template and start time);
2. score every start time t: for each template i, with b = max(conv, 0) + lam mu_i,
   Cf = b^2 / (1 + lam) - lam mu_i^2; keep the best template (``err``, ``ftype``);
3. repeat for ``n_rounds`` rounds (60 in the callers): take the start times whose score exceeds
   Th^2 and is the largest within +-(nt0 - 1) samples (all templates together); optionally save
   template features; subtract those spikes (amplitude = conv at the spike) from the residual;
   recompute ``dprod``/``conv`` of the templates that share channels with them (UtU) and the
   scores, only in a window [st - nt0, st + nt0 - 2] around each spike;
4. PC features of every spike (residual + its own template, projected on wPCA) and, per
   template, the sum of the snippets of its spikes whose score sqrt exceeds Th_average (dWU).

Faithful details kept from the original (v2.0 CUDA/mexMPnu8.cu): float32 arithmetic in the
original's summation orders; score comparisons against ``best + 1e-6`` in double; ties inside the
lockout window are all kept; the subtraction window updates ``dprod`` at [st - nt0, st + nt0 - 2]
only, so the last subtracted sample st + nt0 - 1 keeps a stale projection unless another window
covers it; stable mode subtracts in double and returns the residual rounded toward zero; the
samples that are examined follow the original's 1024-thread launch geometry unless asked
otherwise (``legacy_block``: the "spike holes" of MouseLand/Kilosort#594); see :func:`scan_ranges`.

The lockout is global: in one round at most one spike is taken per 2 nt0 - 1 samples across the
whole probe, so dense or many-channel batches need many rounds (about 45 for 384 channels with
12,000 spikes a batch); what is still above threshold after the last round stays in the residual
(``MatchResult.rounds_exhausted`` tells).

Order of spikes: the original's follows atomicAdd. Ours is defined: by start time, then by the
round that found the spike. Both devices return that order, and the CUDA kernels round every
product before adding it like the twin, so CPU and GPU results are the same bit for bit.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ..backend import array_module
from .registry import cuda_module, dispatch, register

from ..errors import SpikeCapacityError

__all__ = ["match_templates", "MatchResult", "ScanRanges", "scan_ranges", "SpikeCapacityError",
           "DEFAULT_MAX_SPIKES", "DEFAULT_ROUNDS", "ORIGINAL_BLOCK"]

DEFAULT_MAX_SPIKES = 100_000  # the original's maxFR (spikes per batch, all rounds together)
DEFAULT_ROUNDS = 60           # nInnerIter, Params(4) in learnTemplates.m / trackAndSort.m
ORIGINAL_BLOCK = 1024         # the original's threads per block, which decides the samples examined
_FEATURE_LAGS = (-3, 3)       # extractFEAT: conv is read at t - 3 .. t + 2


@dataclass(frozen=True)
class MatchResult:
    """Outputs of :func:`match_templates` (numpy or CuPy arrays, on the input's device).

    n spikes, sorted by start time, then by the round that found them.

    st:                (n,) int32, 0-based sample of the batch where the template starts (the
                       trough is nt0min samples later). MATLAB ``st0`` (the same 0-based value).
    template:          (n,) int32, 0-based template index. MATLAB ``id0`` (0-based too; the
                       callers add 1).
    amplitude:         (n,) float32, the template's filter output at st. MATLAB ``x0``.
    vexp:              (n,) float32, sqrt of the spike's score. MATLAB ``vexp``.
    round_index:       (n,) int32, the round (0-based) that found the spike (not in MATLAB).
    template_features: (Nnearest, n) float32 Fortran, MATLAB ``featW`` (zeros unless asked;
                       Nnearest = iList.shape[0], 0 without iList).
    pc_features:       (NchanNear, Nrank, n) float32 Fortran, MATLAB ``featPC`` (zeros unless asked).
    dWU:               (nt0, Nchan, Nfilt) float64 Fortran, per template the sum of the snippets
                       (residual + own template) of its spikes with vexp > Th_average. MATLAB ``dWU0``.
    residual:          (NT, Nchan) float32 Fortran, data minus all spikes. MATLAB ``drez``.
    nsp:               (Nfilt,) int32, spikes summed into dWU per template. MATLAB ``nsp0``.
    rounds_exhausted:  True if the last of the n_rounds rounds still found spikes, so more may
                       remain above threshold in the residual (the original stops silently).
    """

    st: Any
    template: Any
    amplitude: Any
    vexp: Any
    round_index: Any
    template_features: Any
    pc_features: Any
    dWU: Any
    residual: Any
    nsp: Any
    rounds_exhausted: bool


@dataclass(frozen=True)
class ScanRanges:
    """The samples the pursuit examines (0-based, half-open ranges).

    conv_end:     the first temporal filtering covers start times t < conv_end (later updates
                  around spikes cover t < NT - nt0 wherever their windows reach);
    score_begin:  scores are kept at 0 for t < score_begin (0, or nt0 with the v2.0.2/v2.5.2 fix);
    score_end:    the first scoring covers t < score_end = NT - nt0;
    centre_begin, centre_end: start times tested as spikes in each round.
    """

    conv_end: int
    score_begin: int
    score_end: int
    centre_begin: int
    centre_end: int


def _blocks_below(limit: int, block: int) -> int:
    """Number of multiples of ``block`` in [0, limit): the iterations of the original's
    ``for (tid0 = 0; tid0 < limit; tid0 += block)`` loops."""
    return max(0, -(-limit // block))


def scan_ranges(*, NT: int, nt0: int, legacy_block: int | None = ORIGINAL_BLOCK,
                ignore_first_nt0: bool = False) -> ScanRanges:
    """Which samples mexMPnu8 examines for a batch of NT samples and templates of nt0 samples.

    legacy_block: the original's threads per block (1024). timeFilter steps tid0 by it while
        tid0 < NT - block - nt0 + 1, so the first filtering stops at a multiple of the block, and
        cleanup_spikes tests centres lockout + [0, block * m) with m steps while
        tid0 < NT - block - lockout + 1 (lockout = nt0 - 1). With NT = 64*1024 - 64 this leaves
        ~900 samples per batch unexamined (MouseLand/Kilosort#594). ``None`` examines every start
        time t in [nt0 - 1, NT - nt0): no holes inside the batch (templates that cross the batch
        edges still need the callers' overlapping reads).
    ignore_first_nt0: scores stay 0 for t < nt0, as in v2.0.2 and v2.5.2 (bestFilter's
        ``tid0 >= nt0``, part of their #594 fix); v2.0, v2.5 and v2.5.1 score from t = 0.
    """
    lockout = nt0 - 1
    score_end = max(0, NT - nt0)
    if legacy_block is None:
        conv_end, centre_end = score_end, max(lockout, NT - lockout)
    else:
        if legacy_block < 1:
            raise ValueError(f"legacy_block must be a positive block size or None, got {legacy_block}")
        b = legacy_block
        conv_end = b * _blocks_below(NT - b - nt0 + 1, b)
        centre_end = lockout + b * _blocks_below(NT - b - lockout + 1, b)
    return ScanRanges(conv_end=conv_end, score_begin=nt0 if ignore_first_nt0 else 0,
                      score_end=score_end, centre_begin=lockout, centre_end=centre_end)


# ------------------------------------------------------------------------------ entry point
def match_templates(data, *, U, W, mu, iC, iW, UtU, iList=None, wPCA=None, th: float,
                    th_average: float, lam: float, n_rounds: int = DEFAULT_ROUNDS,
                    template_features: bool = False, pc_features: bool = False,
                    stable_mode: bool = True, max_spikes: int = DEFAULT_MAX_SPIKES,
                    legacy_block: int | None = ORIGINAL_BLOCK,
                    ignore_first_nt0: bool = False) -> MatchResult:
    """Template matching of one batch: mexMPnu8 (Kilosort2 v2.0).

    MATLAB: ``[st0, id0, x0, featW, dWU0, drez, nsp0, featPC, vexp] = mexMPnu8(Params, dataRAW,
    U, W, mu, iC-1, iW-1, UtU, iList-1, wPCA)``; the Params entries the kernel reads become
    ``th`` (Params(3)), ``n_rounds`` (Params(4)), ``lam`` (Params(8)), the feature flag
    Params(13) (>1: ``template_features``, >0: ``pc_features``), ``th_average`` (Params(16)),
    ``stable_mode`` (Params(17)); NT, Nfilt, nt0, Nnearest, Nrank, Nchan and NchanNear
    (Params(1,2,5,6,7,10,11)) come from the array shapes.

    Args (numpy arrays for the CPU twin, CuPy arrays for the CUDA kernels; any memory layout):
        data: (NT, Nchan) float32 batch (dataRAW).
        U: (Nchan, Nfilt, Nrank) float32 spatial components.
        W: (nt0, Nfilt, Nrank) float32 temporal components.
        mu: (Nfilt,) float32 template amplitudes (the penalty's prior).
        iC: (NchanNear, Nchan) int, 0-based: column c lists the channels near channel c
            (MATLAB passes iC-1).
        iW: (Nfilt,) int, 0-based main channel of each template (MATLAB passes iW-1).
        UtU: (Nfilt, Nfilt) bool; UtU[i, j]: subtracting a spike of template i changes the
            filter output of template j (MATLAB index id + Nfilt * bid).
        iList: (Nnearest, Nfilt) int, 0-based neighbouring templates of each template (MATLAB
            passes iList-1); needed only with ``template_features`` (learnTemplates passes
            zeros-1 with features off: its values are then not checked).
        wPCA: (nt0, Nrank) float32 temporal PCs; needed only with ``pc_features``.
        th: detection threshold on sqrt(score): ops.Th(1) when learning, ops.Th(end) when
            extracting.
        th_average: spikes with vexp > th_average enter dWU and nsp (ops.Th(1) in both callers).
        lam: amplitude penalty ops.lam.
        n_rounds: detection/subtraction rounds (nInnerIter = 60).
        template_features, pc_features: compute featW / featPC (trackAndSort: both; learning: none).
        stable_mode: ops.useStableMode: subtract in double precision and return the residual
            rounded toward zero, as the original's stable mode (the CPU is deterministic either
            way; False subtracts in float32 like the original's fast mode). The mex's 10th
            output errmsg (stable mode requested but not compiled in) has no equivalent here.
        max_spikes: capacity per batch (the original's maxFR); more raises SpikeCapacityError.
        legacy_block, ignore_first_nt0: which samples are examined, see :func:`scan_ranges`.
    """
    problem = _prepare(data, U=U, W=W, mu=mu, iC=iC, iW=iW, UtU=UtU, iList=iList, wPCA=wPCA,
                       th=th, th_average=th_average, lam=lam, n_rounds=n_rounds,
                       template_features=template_features, pc_features=pc_features,
                       stable_mode=stable_mode, max_spikes=max_spikes, legacy_block=legacy_block,
                       ignore_first_nt0=ignore_first_nt0)
    return dispatch("mpnu8", data)(problem)


@dataclass(frozen=True)
class _Problem:
    """Validated inputs (arrays on the input's device, the original's Fortran layouts)."""

    data: Any
    U: Any
    W: Any
    mu: Any
    iC: Any
    iW: Any
    UtU: Any
    iList: Any
    wPCA: Any
    th: float
    th_average: float
    lam: float
    n_rounds: int
    template_features: bool
    pc_features: bool
    stable_mode: bool
    max_spikes: int
    ranges: ScanRanges

    @property
    def sizes(self):
        """(NT, Nchan, Nfilt, Nrank, nt0, NchanNear, Nnearest)."""
        NT, nchan = self.data.shape
        nt0, nfilt, nrank = self.W.shape
        nnear = self.iList.shape[0] if self.iList is not None else 0
        return NT, nchan, nfilt, nrank, nt0, self.iC.shape[0], nnear


def _as(xp, a, dtype, name, ndim):
    a = xp.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if dtype is np.float32 and a.dtype != np.float32:
        raise TypeError(f"{name} must be float32 (the original's precision), got {a.dtype}")
    return xp.asfortranarray(a.astype(dtype, copy=False))


def _check_index(xp, a, upper, name, fix):
    if a.size and (int(a.min()) < 0 or int(a.max()) >= upper):
        raise ValueError(f"{name} has values outside [0, {upper}): pass 0-based indices ({fix})")


def _prepare(data, *, U, W, mu, iC, iW, UtU, iList, wPCA, th, th_average, lam, n_rounds,
             template_features, pc_features, stable_mode, max_spikes, legacy_block,
             ignore_first_nt0) -> _Problem:
    xp = array_module(data)
    data = _as(xp, data, np.float32, "data", 2)
    U, W = _as(xp, U, np.float32, "U", 3), _as(xp, W, np.float32, "W", 3)
    mu = _as(xp, mu, np.float32, "mu", 1)
    iC, iW = _as(xp, iC, np.int32, "iC", 2), _as(xp, iW, np.int32, "iW", 1)
    UtU = _as(xp, UtU, np.bool_, "UtU", 2)
    NT, nchan = data.shape
    nt0, nfilt, nrank = W.shape
    if U.shape != (nchan, nfilt, nrank):
        raise ValueError(f"U must be (Nchan, Nfilt, Nrank) = {(nchan, nfilt, nrank)}, got {U.shape}")
    if mu.shape != (nfilt,) or iW.shape != (nfilt,) or UtU.shape != (nfilt, nfilt):
        raise ValueError(f"mu, iW must be ({nfilt},) and UtU ({nfilt}, {nfilt}); got "
                         f"{mu.shape}, {iW.shape}, {UtU.shape}")
    if iC.shape[1] != nchan or not 1 <= iC.shape[0] <= nchan:
        raise ValueError(f"iC must be (NchanNear, Nchan) with NchanNear <= Nchan = {nchan}, "
                         f"got {iC.shape}")
    if nt0 < 4:
        raise ValueError(f"templates need nt0 >= 4 samples, got {nt0}")
    _check_index(xp, iC, nchan, "iC", "MATLAB passes iC-1")
    _check_index(xp, iW, nchan, "iW", "MATLAB passes iW-1")
    if iList is not None:
        iList = _as(xp, iList, np.int32, "iList", 2)
        if iList.shape[1] != nfilt or iList.shape[0] < 1:
            raise ValueError(f"iList must be (Nnearest, Nfilt={nfilt}), got {iList.shape}")
    if template_features:
        if iList is None:
            raise ValueError("template_features needs iList (Nnearest, Nfilt)")
        _check_index(xp, iList, nfilt, "iList", "MATLAB passes iList-1")
    if pc_features:
        if wPCA is None:
            raise ValueError("pc_features needs wPCA (nt0, Nrank)")
        wPCA = _as(xp, wPCA, np.float32, "wPCA", 2)
        if wPCA.shape != (nt0, nrank):
            raise ValueError(f"wPCA must be (nt0, Nrank) = {(nt0, nrank)}, got {wPCA.shape}")
    else:
        wPCA = None
    if int(n_rounds) < 0 or int(max_spikes) < 0:
        raise ValueError("n_rounds and max_spikes must be >= 0")
    ranges = scan_ranges(NT=NT, nt0=nt0, legacy_block=legacy_block, ignore_first_nt0=ignore_first_nt0)
    return _Problem(data=data, U=U, W=W, mu=mu, iC=iC, iW=iW, UtU=UtU, iList=iList, wPCA=wPCA,
                    th=float(th), th_average=float(th_average), lam=float(lam),
                    n_rounds=int(n_rounds), template_features=bool(template_features),
                    pc_features=bool(pc_features), stable_mode=bool(stable_mode),
                    max_spikes=int(max_spikes), ranges=ranges)


def _capacity_error(total: int, max_spikes: int, round_: int) -> SpikeCapacityError:
    return SpikeCapacityError(
        f"template matching found {total} spikes in one batch by round {round_ + 1}, more than "
        f"max_spikes={max_spikes}; raise max_spikes (the original silently dropped spikes "
        f"beyond maxFR=100000), or check the threshold Th and the data scaling")


def _final_order(st, rounds, xp):
    """Permutation sorting spikes by start time, then round (keys are unique: one spike per
    start time per round)."""
    n_rounds = int(rounds.max()) + 1 if rounds.size else 1
    return xp.argsort(st.astype(np.int64) * n_rounds + rounds)


def _template_segments(ids, nfilt, xp):
    """(order, starts): spike indices grouped by template, keeping their order inside a template,
    and where each template's group starts (nfilt + 1 entries)."""
    n = ids.size
    order = xp.argsort(ids.astype(np.int64) * max(n, 1) + xp.arange(n))
    starts = xp.searchsorted(ids[order], xp.arange(nfilt + 1))
    return order.astype(np.int32), starts.astype(np.int32)


# ------------------------------------------------------------------------------ CPU (numba)
# The twin's kernels are serial numba functions that release the GIL; _in_parallel runs them on
# Python threads over disjoint parts (templates, channels or sample ranges). This keeps numba's
# first compilation short (no parfors) and the result independent of the thread count.
_CHUNK = 1024  # samples per inner block: the rows of one block stay in L1
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _in_parallel(kernel, n_items: int, *args) -> None:
    """kernel(*args, items) over interleaved parts of range(n_items), on numba's thread count.

    Each item is handled by exactly one call, and the kernels write only what their items own,
    so the result is the same for any number of threads."""
    n_threads = numba.get_num_threads()
    if n_items <= 0:
        return
    if n_threads <= 1 or n_items == 1:
        kernel(*args, np.arange(n_items))
        return
    n_parts = min(n_items, 4 * n_threads)  # interleaving balances uneven items
    parts = [np.arange(i, n_items, n_parts) for i in range(n_parts)]
    pool = _POOLS.get(n_threads)
    if pool is None:
        pool = _POOLS.setdefault(n_threads, ThreadPoolExecutor(n_threads, "pykilosort-mpnu8"))
    for future in [pool.submit(kernel, *args, part) for part in parts]:
        future.result()


def _split_ranges(starts, ends, size: int = _CHUNK):
    """[starts, ends) ranges cut into pieces of at most ``size`` samples (for load balance)."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    counts = np.maximum(0, -(-(ends - starts) // size))
    first = np.repeat(np.cumsum(counts) - counts, counts)
    pieces = np.repeat(starts, counts) + (np.arange(counts.sum()) - first) * size
    return pieces, np.minimum(pieces + size, np.repeat(ends, counts))


# The two filters below are float32 running sums whose order is the original's (one term per
# channel, or per lag, in turn). They take four terms per pass over the output block: the same
# additions in the same order, with a quarter of the loads and stores of the output.
@numba.njit(cache=True, nogil=True)
def _project_space(cur, UT, nbr, f, t0, t1, dprod):
    """dprod[f, k, t] for t in [t0, t1): sum over i of U[nbr[i], f, k] * cur[nbr[i], t], float32,
    i in iC order (spaceFilter, spaceFilterUpdate). cur: (Nchan, NT) residual as float32.
    Three ranks per pass over cur's rows (one load serves three sums)."""
    nrank = dprod.shape[1]
    for c0 in range(t0, t1, _CHUNK):
        n = min(_CHUNK, t1 - c0)
        k = 0
        while k + 3 <= nrank:
            _space3(cur, UT[k, f], UT[k + 1, f], UT[k + 2, f], nbr, c0, n,
                    dprod[f, k, c0:c0 + n], dprod[f, k + 1, c0:c0 + n], dprod[f, k + 2, c0:c0 + n])
            k += 3
        for k in range(k, nrank):
            _space1(cur, UT[k, f], nbr, c0, n, dprod[f, k, c0:c0 + n])


@numba.njit(cache=True, nogil=True)
def _space1(cur, u, nbr, c0, n, out):
    """out[j] = sum over i of u[nbr[i]] * cur[nbr[i], c0 + j], four channels per pass."""
    out[:] = 0
    i = 0
    while i + 4 <= nbr.size:
        u0, u1, u2, u3 = u[nbr[i]], u[nbr[i + 1]], u[nbr[i + 2]], u[nbr[i + 3]]
        r0, r1 = cur[nbr[i], c0:c0 + n], cur[nbr[i + 1], c0:c0 + n]
        r2, r3 = cur[nbr[i + 2], c0:c0 + n], cur[nbr[i + 3], c0:c0 + n]
        for j in range(n):
            out[j] = (((out[j] + u0 * r0[j]) + u1 * r1[j]) + u2 * r2[j]) + u3 * r3[j]
        i += 4
    for i in range(i, nbr.size):
        ui, row = u[nbr[i]], cur[nbr[i], c0:c0 + n]
        for j in range(n):
            out[j] += ui * row[j]


@numba.njit(cache=True, nogil=True)
def _space3(cur, u, v, w, nbr, c0, n, out, out2, out3):
    """_space1 for three spatial components u, v, w at once."""
    out[:] = 0
    out2[:] = 0
    out3[:] = 0
    i = 0
    while i + 4 <= nbr.size:
        u0, u1, u2, u3 = u[nbr[i]], u[nbr[i + 1]], u[nbr[i + 2]], u[nbr[i + 3]]
        v0, v1, v2, v3 = v[nbr[i]], v[nbr[i + 1]], v[nbr[i + 2]], v[nbr[i + 3]]
        w0, w1, w2, w3 = w[nbr[i]], w[nbr[i + 1]], w[nbr[i + 2]], w[nbr[i + 3]]
        r0, r1 = cur[nbr[i], c0:c0 + n], cur[nbr[i + 1], c0:c0 + n]
        r2, r3 = cur[nbr[i + 2], c0:c0 + n], cur[nbr[i + 3], c0:c0 + n]
        for j in range(n):
            a0, a1, a2, a3 = r0[j], r1[j], r2[j], r3[j]
            out[j] = (((out[j] + u0 * a0) + u1 * a1) + u2 * a2) + u3 * a3
            out2[j] = (((out2[j] + v0 * a0) + v1 * a1) + v2 * a2) + v3 * a3
            out3[j] = (((out3[j] + w0 * a0) + w1 * a1) + w2 * a2) + w3 * a3
        i += 4
    for i in range(i, nbr.size):
        ui, vi, wi, row = u[nbr[i]], v[nbr[i]], w[nbr[i]], cur[nbr[i], c0:c0 + n]
        for j in range(n):
            out[j] += ui * row[j]
            out2[j] += vi * row[j]
            out3[j] += wi * row[j]


@numba.njit(cache=True, nogil=True)
def _correlate_time(dprod, WT, f, t0, t1, conv):
    """conv[f, t] for t in [t0, t1): sum over k, then lag i, of W[i, f, k] * dprod[f, k, t + i],
    float32 in that order (timeFilter, timeFilterUpdate)."""
    nt0 = WT.shape[2]
    for c0 in range(t0, t1, _CHUNK):
        n = min(_CHUNK, t1 - c0)
        out = conv[f, c0:c0 + n]
        out[:] = 0
        for k in range(WT.shape[0]):
            w = WT[k, f]
            row = dprod[f, k]
            i = 0
            while i + 4 <= nt0:
                w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
                src = row[c0 + i:c0 + i + n + 3]
                for j in range(n):
                    o = out[j]
                    o += w0 * src[j]
                    o += w1 * src[j + 1]
                    o += w2 * src[j + 2]
                    o += w3 * src[j + 3]
                    out[j] = o
                i += 4
            for i in range(i, nt0):
                wi, src = w[i], row[c0 + i:c0 + i + n]
                for j in range(n):
                    out[j] += wi * src[j]


@numba.njit(cache=True, nogil=True)
def _score_range(conv, mu, lam, t0, t1, err, ftype):
    """err[t], ftype[t] for t in [t0, t1) (bestFilter): the best over templates i, in order, of
    Cf = (max(conv[i, t], 0) + lam mu_i)^2 / (1 + lam) - lam mu_i^2, a template winning only if
    Cf > best + 1e-6 (compared in double, as the original's double literal promotes)."""
    n = t1 - t0
    a = np.float32(1.0) + lam
    best = np.zeros(n, np.float32)
    ibest = np.zeros(n, np.int32)
    for i in range(conv.shape[0]):
        lm = lam * mu[i]
        pen = lm * mu[i]
        row = conv[i, t0:t1]
        for j in range(n):
            c = row[j]
            b = (c if c > 0 else np.float32(0.0)) + lm
            cf = b * b / a - pen
            if float(cf) > float(best[j]) + 1e-6:
                best[j] = cf
                ibest[j] = i
    err[t0:t1] = best
    ftype[t0:t1] = ibest


@numba.njit(cache=True, nogil=True)
def _filter_templates(cur, UT, WT, nbrs, conv_end, dprod, conv, items):
    """First filtering of templates ``items``: dprod at every sample, conv for t < conv_end."""
    for f in items:
        _project_space(cur, UT, nbrs[f], f, 0, cur.shape[1], dprod)
        _correlate_time(dprod, WT, f, 0, conv_end, conv)


@numba.njit(cache=True, nogil=True)
def _score_ranges(conv, mu, lam, starts, ends, err, ftype, items):
    for j in items:
        _score_range(conv, mu, lam, starts[j], ends[j], err, ftype)


@numba.njit(cache=True, nogil=True)
def _find_peaks(err, th2, lockout, c0, c1):
    """Start times t in [c0, c1), ascending, with err[t] > th2 and no larger err within
    +-lockout samples, all templates together; equal scores do not exclude each other
    (cleanup_spikes). Beyond the batch end counts as nothing."""
    NT = err.size
    out = np.empty(max(c1 - c0, 0), np.int32)
    n = 0
    for t in range(c0, c1):
        e = err[t]
        if e > th2:
            keep = True
            for j in range(max(t - lockout, 0), min(t + lockout + 1, NT)):
                if err[j] > e:
                    keep = False
                    break
            if keep:
                out[n] = t
                n += 1
    return out[:n]


@numba.njit(cache=True, nogil=True)
def _template_features(conv, mu, lam, iListT, st, ids, feat):
    """feat[s, j] (extractFEAT): for neighbour template g = iList[j, id_s], the largest over
    lags -3..2 of (conv[g, st + lag] + lam / mu_g) / sqrt(lam / mu_g^2 + 1), floored at 0."""
    for s in range(st.size):
        for j in range(iListT.shape[1]):
            g = iListT[ids[s], j]
            m = mu[g]
            shift = lam / m
            scale = np.sqrt(lam / (m * m) + np.float32(1.0))
            r = np.float32(0.0)
            for lag in range(_FEATURE_LAGS[0], _FEATURE_LAGS[1]):
                cf = (conv[g, st[s] + lag] + shift) / scale
                if cf > r:  # fmaxf(r, cf)
                    r = cf
            feat[s, j] = r


def _inert_columns(UT, WT):
    """(Nfilt, Nchan) bool: U[c, f, :] is all zero and W[:, f, :] all finite. The original
    subtracts a spike on every channel; on such a channel x = sum_k W U is +0.0, so the addend
    -y * x is -0.0 for 0 < y < inf, and adding -0.0 leaves every value (-0.0 and NaN included)
    unchanged bit for bit. _inert_skip skips only then; an infinite or NaN amplitude makes the
    addend NaN and is subtracted everywhere, as the kernels do."""
    return ~UT.any(axis=0) & np.isfinite(WT).all(axis=(0, 2))[:, None]


@numba.njit(cache=True, nogil=True)
def _inert_skip(inert, f, c, y):
    return inert[f, c] and 0 < y < np.inf


@numba.njit(cache=True, nogil=True)
def _subtract_f64(acc, cur, WT, UT, inert, st, ids, amp, items):
    """Stable mode (subtract_spikes_v4) on channels ``items``: acc[c, st + dt] += -y * sum_k
    W[dt] U[c] in double, spikes in time order; cur keeps acc rounded to float32 for the
    filters to read. Channels where the addition cannot change a bit are skipped (inert)."""
    nrank, _, nt0 = WT.shape
    for c in items:
        for s in range(st.size):
            f = ids[s]
            if _inert_skip(inert, f, c, amp[s]):
                continue
            y = np.float64(amp[s])
            for dt in range(nt0):
                x = 0.0
                for k in range(nrank):
                    x += np.float64(WT[k, f, dt]) * np.float64(UT[k, f, c])
                v = acc[c, st[s] + dt] + (-y) * x
                acc[c, st[s] + dt] = v
                cur[c, st[s] + dt] = np.float32(v)


@numba.njit(cache=True, nogil=True)
def _subtract_f32(cur, WT, UT, inert, st, ids, amp, items):
    """Fast mode (subtract_spikes): the same in float32, spikes in time order."""
    nrank, _, nt0 = WT.shape
    for c in items:
        for s in range(st.size):
            f = ids[s]
            if _inert_skip(inert, f, c, amp[s]):
                continue
            for dt in range(nt0):
                x = np.float32(0.0)
                for k in range(nrank):
                    x += WT[k, f, dt] * UT[k, f, c]
                cur[c, st[s] + dt] += -amp[s] * x


@numba.njit(cache=True, nogil=True)
def _merge_windows(st, take, nt0, lo, hi):
    """Union of the update windows [st - nt0, st + nt0 - 1) of the spikes with take[s] (st
    ascending), clipped to [lo, hi): sorted disjoint (starts, ends)."""
    starts = np.empty(st.size, np.int64)
    ends = np.empty(st.size, np.int64)
    m = 0
    for s in range(st.size):
        if not take[s]:
            continue
        a = max(st[s] - nt0, lo)
        b = min(st[s] + nt0 - 1, hi)
        if a >= b:
            continue
        if m > 0 and a <= ends[m - 1]:
            ends[m - 1] = max(ends[m - 1], b)
        else:
            starts[m] = a
            ends[m] = b
            m += 1
    return starts[:m], ends[:m]


@numba.njit(cache=True, nogil=True)
def _refilter_templates(cur, UT, WT, nbrs, UtUT, st, ids, dprod, conv, items):
    """spaceFilterUpdate then timeFilterUpdate for templates ``items``: recompute dprod on the
    windows of the new spikes whose template touches f (UtU), then conv there (t < NT - nt0).
    Overlapping windows are computed once; the values are those of the original's redundant
    per-spike recomputation."""
    NT = cur.shape[1]
    nt0 = WT.shape[2]
    take = np.empty(st.size, np.bool_)
    for f in items:
        for s in range(st.size):
            take[s] = UtUT[f, ids[s]]
        starts, ends = _merge_windows(st, take, nt0, 0, NT)
        for j in range(starts.size):
            _project_space(cur, UT, nbrs[f], f, starts[j], ends[j], dprod)
        for j in range(starts.size):
            _correlate_time(dprod, WT, f, starts[j], min(ends[j], NT - nt0), conv)


@numba.njit(cache=True, nogil=True)
def _copy_rows(src, dst, items):
    """dst[c] = src[c] (cast to dst's dtype) for the rows c in items."""
    for c in items:
        d, s = dst[c], src[c]
        for t in range(s.size):
            d[t] = s[t]


@numba.njit(cache=True, nogil=True)
def _round_toward_zero(acc, out, items):
    """out = float32(acc) rounded toward zero (convToSingle's __double2float_rz).

    Where rounding to nearest went away from zero, the next float towards zero is the bit
    pattern minus one (floats are sign and magnitude; inf -> FLT_MAX). Branch-free, so the loop
    vectorises: 9x faster than a branch that goes either way half the time."""
    for c in items:
        a, o = acc[c], out[c].view(np.int32)
        for t in range(a.size):
            d = a[t]
            x = np.float32(d)
            o[t] = x.view(np.int32) - np.int32(abs(np.float64(x)) > abs(d))


@numba.njit(cache=True, nogil=True)
def _pc_features(res, UT, WT, PCT, nbrs, st, ids, amp, out):
    """out[s, p, i] (computePCfeatures) = Y * amp + sum_t res[ch, st + t] wPCA[t, p], ch =
    nbrs[id, i], Y = sum_k (sum_t W[t, id, k] wPCA[t, p]) U[ch, id, k] (float32): the spike's
    residual plus its own template, in PC space."""
    nrank, _, nt0 = WT.shape
    for s in range(st.size):
        f = ids[s]
        for p in range(PCT.shape[0]):
            for i in range(nbrs.shape[1]):
                ch = nbrs[f, i]
                y = np.float32(0.0)
                for k in range(nrank):
                    x = np.float32(0.0)
                    for t in range(nt0):
                        x += WT[k, f, t] * PCT[p, t]
                    y += x * UT[k, f, ch]
                x = y * amp[s]
                for t in range(nt0):
                    x += res[ch, st[s] + t] * PCT[p, t]
                out[s, p, i] = x


@numba.njit(cache=True, nogil=True)
def _average_snips(res, WT, UT, order, seg, st, amp, vexp, th, dWU, nsp, items):
    """average_snips for templates ``items``: over f's spikes in output order with vexp > th,
    count them and add residual + amp * template to dWU[f, c, dt] in double (the template a
    double sum of the float32 products W U, as the original)."""
    nrank, _, nt0 = WT.shape
    nchan = res.shape[0]
    template = np.empty((nchan, nt0), np.float64)
    for f in items:
        if seg[f + 1] > seg[f]:
            for c in range(nchan):
                for dt in range(nt0):
                    x = 0.0
                    for k in range(nrank):
                        x += np.float64(WT[k, f, dt] * UT[k, f, c])
                    template[c, dt] = x
        for q in range(seg[f], seg[f + 1]):
            s = order[q]
            if not vexp[s] > th:
                continue
            nsp[f] += 1
            y = np.float64(amp[s])
            for c in range(nchan):
                row, out, x = res[c, st[s]:st[s] + nt0], dWU[f, c], template[c]
                for dt in range(nt0):
                    out[dt] += np.float64(row[dt]) + y * x[dt]


class _CpuState:
    """The twin's working arrays. Layouts are the transposes of the original's Fortran arrays,
    so each template's rows are contiguous: cur (Nchan, NT), dprod (Nfilt, Nrank, NT),
    conv (Nfilt, NT)."""

    def __init__(self, p: _Problem):
        NT, nchan, nfilt, nrank, nt0, _, _ = p.sizes
        self.p = p
        self.UT, self.WT = np.ascontiguousarray(p.U.T), np.ascontiguousarray(p.W.T)
        self.inert = _inert_columns(self.UT, self.WT)
        self.nbrs = np.ascontiguousarray(p.iC[:, p.iW].T)  # (Nfilt, NchanNear)
        self.UtUT = np.ascontiguousarray(p.UtU.T)
        self.iListT = np.ascontiguousarray(p.iList.T) if p.iList is not None else None
        self.lam, self.mu = np.float32(p.lam), p.mu
        # copies (the caller's data stays intact), made on numba's threads: most of their time
        # is the first touch of fresh pages (0.1 s a batch at 384 channels on one thread)
        self.cur = np.empty((nchan, NT), np.float32)
        _in_parallel(_copy_rows, nchan, p.data.T, self.cur)
        self.acc = np.empty((nchan, NT), np.float64) if p.stable_mode else None
        if self.acc is not None:
            _in_parallel(_copy_rows, nchan, self.cur, self.acc)
        self.dprod = np.zeros((nfilt, nrank, NT), np.float32)
        self.conv = np.zeros((nfilt, NT), np.float32)
        self.err = np.zeros(NT, np.float32)
        self.ftype = np.zeros(NT, np.int32)

    def first_pass(self):
        r = self.p.ranges
        _in_parallel(_filter_templates, self.conv.shape[0], self.cur, self.UT, self.WT, self.nbrs,
                     r.conv_end, self.dprod, self.conv)
        self._score(*_split_ranges([r.score_begin], [r.score_end]))

    def _score(self, starts, ends):
        _in_parallel(_score_ranges, starts.size, self.conv, self.mu, self.lam, starts, ends,
                     self.err, self.ftype)

    def subtract_and_update(self, st, ids, amp):
        nchan = self.cur.shape[0]
        if self.acc is not None:
            _in_parallel(_subtract_f64, nchan, self.acc, self.cur, self.WT, self.UT, self.inert,
                         st, ids, amp)
        else:
            _in_parallel(_subtract_f32, nchan, self.cur, self.WT, self.UT, self.inert, st, ids,
                         amp)
        _in_parallel(_refilter_templates, self.conv.shape[0], self.cur, self.UT, self.WT,
                     self.nbrs, self.UtUT, st, ids, self.dprod, self.conv)
        # bestFilterUpdate: scores again on every new spike's window, clipped to [lo, NT)
        windows = _merge_windows(st, np.ones(st.size, np.bool_), self.WT.shape[2],
                                 self.p.ranges.score_begin, self.err.size)
        self._score(*_split_ranges(*windows))

    def residual(self):
        """(Nchan, NT) float32 final residual."""
        if self.acc is None:
            return self.cur
        out = np.empty_like(self.cur)
        _in_parallel(_round_toward_zero, out.shape[0], self.acc, out)
        return out


def _pursuit_cpu(state: _CpuState):
    """The rounds: find peaks, take their template and amplitude, features, subtract, update.
    Returns one (st, ids, amp, vexp, feat) per round that found spikes."""
    p = state.p
    nt0, nnear = p.sizes[4], p.sizes[6]
    r = p.ranges
    th2 = np.float32(p.th) * np.float32(p.th)
    found = []
    total = 0
    for k in range(p.n_rounds):
        st = _find_peaks(state.err, th2, nt0 - 1, r.centre_begin, r.centre_end)
        if st.size == 0:
            break  # nothing changes any more: the remaining rounds would find nothing either
        total += st.size
        if total > p.max_spikes:
            raise _capacity_error(total, p.max_spikes, k)
        ids = state.ftype[st]
        amp = state.conv[ids, st]
        vexp = np.sqrt(state.err[st])
        feat = np.zeros((st.size, nnear), np.float32)
        if p.template_features:
            _template_features(state.conv, state.mu, state.lam, state.iListT, st, ids, feat)
        state.subtract_and_update(st, ids, amp)
        found.append((st, ids, amp, vexp, feat))
    return found


def _concat_rounds(found, nnear):
    """Spikes of all rounds in the final order: (st, ids, amp, vexp, feat, round_index)."""
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32),
             np.zeros(0, np.float32), np.zeros((0, nnear), np.float32))
    cols = [np.concatenate([f[i] for f in found] + [empty[i]]) for i in range(5)]
    rounds = np.concatenate([np.full(f[0].size, k, np.int32) for k, f in enumerate(found)]
                            + [np.zeros(0, np.int32)])
    order = _final_order(cols[0], rounds, np)
    return tuple(c[order] for c in cols) + (rounds[order],)


@register("mpnu8", "cpu")
def _match_cpu(p: _Problem) -> MatchResult:
    NT, nchan, nfilt, nrank, nt0, nnear_ch, nnear = p.sizes
    state = _CpuState(p)
    state.first_pass()
    found = _pursuit_cpu(state)
    st, ids, amp, vexp, feat, rounds = _concat_rounds(found, nnear)
    res = state.residual()
    pcf = np.zeros((st.size, nrank, nnear_ch), np.float32)
    if p.pc_features:
        _pc_features(res, state.UT, state.WT, np.ascontiguousarray(p.wPCA.T), state.nbrs, st,
                     ids, amp, pcf)
    dWU = np.zeros((nfilt, nchan, nt0), np.float64)
    nsp = np.zeros(nfilt, np.int32)
    seg_order, seg = _template_segments(ids, nfilt, np)
    _in_parallel(_average_snips, nfilt, res, state.WT, state.UT, seg_order, seg, st, amp, vexp,
                 np.float32(p.th_average), dWU, nsp)
    return MatchResult(st=st, template=ids, amplitude=amp, vexp=vexp, round_index=rounds,
                       template_features=feat.T, pc_features=pcf.T, dWU=dWU.T, residual=res.T,
                       nsp=nsp, rounds_exhausted=p.n_rounds > 0 and len(found) == p.n_rounds)


# ------------------------------------------------------------------------------ CUDA (CuPy)
_THREADS = 256          # threads per block of the per-sample kernels
_DEFAULT_NT0_MAX = 81   # the original's shared-memory capacity (its 81-sample arrays)
_DEFAULT_NRANK_MAX = 3  # NrankMax
_DEFAULT_NEAR_MAX = 32  # NchanMax: channels per neighbourhood


def _module(p: _Problem):
    _, _, _, nrank, nt0, nnear_ch, _ = p.sizes
    defines = (("MP_THREADS", _THREADS), ("MP_NT0_MAX", max(_DEFAULT_NT0_MAX, nt0)),
               ("MP_NRANK_MAX", max(_DEFAULT_NRANK_MAX, nrank)),
               ("MP_NEAR_MAX", max(_DEFAULT_NEAR_MAX, nnear_ch)))
    return cuda_module("mpnu8.cu", defines)


def _blocks(n: int, threads: int = _THREADS) -> int:
    return max(1, (n + threads - 1) // threads)


def _window_threads(nt0: int) -> int:
    """Threads per block for the per-spike windows of 2 nt0 - 1 samples (a multiple of 32)."""
    return 32 * ((2 * nt0 - 1 + 31) // 32)


class _CudaState:
    """Device arrays in the original's Fortran layouts: resid (NT, Nchan) (+ a double copy in
    stable mode), dprod (NT, Nfilt, Nrank), conv (NT, Nfilt), err/ftype (NT,), and spike
    buffers of max_spikes entries."""

    def __init__(self, p: _Problem):
        import cupy as cp

        NT, nchan, nfilt, nrank, nt0, _, nnear = p.sizes
        self.p, self.cp, self.mod = p, cp, _module(p)
        self.resid = p.data.copy(order="F")
        self.resid64 = self.resid.astype(cp.float64, order="F") if p.stable_mode else None
        self.UtU8 = p.UtU.astype(cp.uint8, order="F")
        self.dprod = cp.zeros((NT, nfilt, nrank), cp.float32, order="F")
        self.conv = cp.zeros((NT, nfilt), cp.float32, order="F")
        self.err = cp.zeros(NT, cp.float32)
        self.ftype = cp.zeros(NT, cp.int32)
        cap = max(p.max_spikes, 1)
        self.st, self.id = cp.zeros(cap, cp.int32), cp.zeros(cap, cp.int32)
        self.amp, self.vexp = cp.zeros(cap, cp.float32), cp.zeros(cap, cp.float32)
        self.feat = cp.zeros((max(nnear, 1), cap), cp.float32, order="F")
        self.counter = cp.zeros(1, cp.int32)

    def kernel(self, name):
        return self.mod.get_function(name)

    def first_pass(self):
        p, r = self.p, self.p.ranges
        NT, nchan, nfilt, nrank, nt0, nnear_ch, _ = p.sizes
        if nfilt == 0:
            return
        i32 = np.int32
        self.kernel("mp_space_filter")((_blocks(NT), nfilt), (_THREADS,), (
            p.data, p.U, p.iC, p.iW, self.dprod, i32(NT), i32(nchan), i32(nnear_ch), i32(nfilt),
            i32(nrank)))
        if r.conv_end > 0:
            self.kernel("mp_time_filter")((_blocks(r.conv_end), nfilt), (_THREADS,), (
                self.dprod, p.W, self.conv, i32(NT), i32(nfilt), i32(nrank), i32(nt0),
                i32(r.conv_end)))
        self._score(r.score_begin, r.score_end)

    def _score(self, t0, t1):
        p = self.p
        NT, _, nfilt, _, _, _, _ = p.sizes
        if t1 > t0:
            self.kernel("mp_best_filter")((_blocks(t1 - t0),), (_THREADS,), (
                self.conv, p.mu, self.err, self.ftype, np.int32(NT), np.int32(nfilt),
                np.float32(p.lam), np.int32(t0), np.int32(t1)))

    def find_peaks(self):
        """cleanup_spikes into the buffers after the spikes already found; returns the total."""
        p, r = self.p, self.p.ranges
        NT, _, _, _, nt0, _, _ = p.sizes
        n = r.centre_end - r.centre_begin
        if n > 0:
            th2 = np.float32(p.th) * np.float32(p.th)
            self.kernel("mp_cleanup")((_blocks(n),), (_THREADS,), (
                self.err, self.ftype, self.conv, self.st, self.id, self.amp, self.vexp,
                self.counter, np.int32(NT), np.int32(nt0 - 1), th2, np.int32(r.centre_begin),
                np.int32(r.centre_end), np.int32(p.max_spikes)))
        return int(self.counter.get()[0])

    def sort_round(self, n0, n1):
        """Order the round's spikes by start time (unique within a round), as the twin does;
        atomicAdd left them in arbitrary order."""
        order = self.cp.argsort(self.st[n0:n1])
        for a in (self.st, self.id, self.amp, self.vexp):
            a[n0:n1] = a[n0:n1][order]

    def features(self, n0, n1):
        p = self.p
        NT, _, _, _, _, _, nnear = p.sizes
        self.kernel("mp_template_features")((_blocks((n1 - n0) * nnear),), (_THREADS,), (
            self.conv, p.mu, p.iList, self.st, self.id, self.feat, np.int32(n0), np.int32(n1),
            np.int32(NT), np.int32(nnear), np.float32(p.lam)))

    def subtract_and_update(self, n0, n1):
        p = self.p
        NT, nchan, nfilt, nrank, nt0, nnear_ch, _ = p.sizes
        i32 = np.int32
        spikes = (self.st, self.id, self.amp, i32(n0), i32(n1))
        shape = (i32(NT), i32(nchan), i32(nfilt), i32(nrank), i32(nt0))
        stable = self.resid64 is not None
        target = self.resid64 if stable else self.resid
        self.kernel("mp_subtract_f64" if stable else "mp_subtract_f32")((n1 - n0,), (_THREADS,), (
            *spikes, target, p.W, p.U, *shape))
        wt = _window_threads(nt0)
        self.kernel("mp_space_update_f64" if stable else "mp_space_update_f32")((nfilt,), (wt,), (
            target, p.U, p.iC, p.iW, self.UtU8, self.dprod, self.st, self.id, i32(n0), i32(n1),
            i32(NT), i32(nchan), i32(nnear_ch), i32(nfilt), i32(nrank), i32(nt0)))
        self.kernel("mp_time_update")((nfilt,), (wt,), (
            self.dprod, p.W, self.UtU8, self.conv, self.st, self.id, i32(n0), i32(n1),
            i32(NT), i32(nfilt), i32(nrank), i32(nt0)))
        self.kernel("mp_best_update")((n1 - n0,), (wt,), (
            self.conv, p.mu, self.err, self.ftype, self.st, i32(n0), i32(n1), i32(NT),
            i32(nfilt), np.float32(p.lam), i32(nt0), i32(p.ranges.score_begin)))

    def final_residual(self):
        if self.resid64 is not None:
            n = self.resid.size
            self.kernel("mp_to_single_rz")((_blocks(n),), (_THREADS,), (
                self.resid64, self.resid, np.int64(n)))
        return self.resid


def _pursuit_cuda(s: _CudaState) -> list[int]:
    """The rounds on the device; returns the spike count after each round that found spikes."""
    p = s.p
    bounds = [0]
    if p.sizes[2] == 0:
        return bounds
    for k in range(p.n_rounds):
        total = s.find_peaks()
        if total > p.max_spikes:
            raise _capacity_error(total, p.max_spikes, k)
        n0 = bounds[-1]
        if total == n0:
            break
        s.sort_round(n0, total)
        if p.template_features:
            s.features(n0, total)
        s.subtract_and_update(n0, total)
        bounds.append(total)
    return bounds


def _features_and_averages_cuda(s: _CudaState, st, ids, amp, vexp, res):
    """computePCfeatures and average_snips over the final spike order."""
    cp, p = s.cp, s.p
    NT, nchan, nfilt, nrank, nt0, nnear_ch, _ = p.sizes
    n = st.size
    i32 = np.int32
    pcf = cp.zeros((nnear_ch, nrank, n), cp.float32, order="F")
    dWU = cp.zeros((nt0, nchan, nfilt), cp.float64, order="F")
    nsp = cp.zeros(nfilt, cp.int32)
    if nfilt == 0 or n == 0:
        return pcf, dWU, nsp
    order, seg = _template_segments(ids, nfilt, cp)
    if p.pc_features:
        s.kernel("mp_pc_features")((nfilt,), (nnear_ch, nrank), (
            res, p.W, p.U, p.iC, p.iW, p.wPCA, st, amp, order, seg, pcf, i32(NT), i32(nchan),
            i32(nnear_ch), i32(nfilt), i32(nrank), i32(nt0)))
    s.kernel("mp_average_snips")((nfilt,), (_THREADS,), (
        res, p.W, p.U, st, amp, vexp, order, seg, np.float32(p.th_average), dWU, nsp,
        i32(NT), i32(nchan), i32(nfilt), i32(nrank), i32(nt0)))
    return pcf, dWU, nsp


@register("mpnu8", "cuda")
def _match_cuda(p: _Problem) -> MatchResult:
    import cupy as cp

    nnear = p.sizes[6]
    s = _CudaState(p)
    s.first_pass()
    bounds = _pursuit_cuda(s)
    n = bounds[-1]
    rounds = cp.asarray(np.repeat(np.arange(len(bounds) - 1, dtype=np.int32), np.diff(bounds)))
    order = _final_order(s.st[:n], rounds, cp)
    st, ids, amp, vexp = (a[:n][order] for a in (s.st, s.id, s.amp, s.vexp))
    feat = (s.feat[:, :n][:, order] if p.template_features
            else cp.zeros((nnear, n), cp.float32))
    res = s.final_residual()
    pcf, dWU, nsp = _features_and_averages_cuda(s, st, ids, amp, vexp, res)
    return MatchResult(st=st, template=ids, amplitude=amp, vexp=vexp, round_index=rounds[order],
                       template_features=cp.asfortranarray(feat), pc_features=pcf, dWU=dWU,
                       residual=res, nsp=nsp,
                       rounds_exhausted=p.n_rounds > 0 and len(bounds) - 1 == p.n_rounds)
