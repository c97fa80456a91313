"""cluster_projections: one k-means step on the PC projections of a batch's threshold crossings.

The port of Kilosort2's mexClustering2 (CUDA kernel in cuda/clustering.cu + numba twin), which
clusterSingleBatches.m (v2.0) iterates 10 times per batch:

    [dWU, iclust, dx, nsp, dV] = mexClustering2(Params, uproj, W, mu, call-1, iMatch, iC-1)
    Params = [Nspikes NrankPC Nfilt 0 NrankPC*Nchan lam=0 NchanNear Nchan]

Every spike is assigned to the template of its neighbourhood with the largest cost
``(max(0, <u, w>) + lam/mu)^2 / (1 + lam/mu^2) - lam`` (which must be > 0), and the projections of
each template's spikes are summed onto the channels they were taken from. Both devices evaluate
the same single-precision operations in the same order, without atomics, so the results are
deterministic and the CUDA kernel equals the twin bit for bit.

This module also holds the numba twin of :func:`pykilosort.kernels.distances.template_distances`
(mexDistances2), which shares its inner-product helpers.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numba
import numpy as np

from ..backend import array_module
from .registry import cuda_module, dispatch, register

__all__ = ["cluster_projections", "match_mask", "ClusteringResult"]

_THREADS = 256  # cluster_assign: one thread per spike
_AVG_THREADS = 64  # cluster_average: one block per template; n_rank*n_near (51) adds per spike


class ClusteringResult(NamedTuple):
    """The five outputs of mexClustering2, in its order, on the device of the inputs."""

    dWU: Any  # (n_rank*Nchan, Nfilt) float32, Fortran: summed projections of each template's spikes
    iclust: Any  # (Nspikes,) int32, 0-based template of each spike (`unassigned` if none)
    dx: Any  # (Nspikes,) float32, the winning cost (0 for unassigned spikes)
    nsp: Any  # (Nfilt,) int32, spikes per template
    dV: Any  # (Nspikes, Nfilt) float32 Fortran costs (NaN where not matched), or None


def cluster_projections(*, uproj, W, mu, call, iMatch, iC, lam: float = 0.0,
                        unassigned: int = 0, return_costs: bool = False) -> ClusteringResult:
    """Assign spikes to templates and sum each template's spike projections (mexClustering2).

    Args (numpy arrays run the numba twin, cupy arrays the CUDA kernel; indices 0-based):
        uproj: (n_rank*NchanNear, Nspikes) or (n_rank, NchanNear, Nspikes) float32: each spike's
            projections on the n_rank PCs of its NchanNear neighbour channels (mexThSpkPC's uS).
        W: (n_rank*Nchan, Nfilt) or (n_rank, Nchan, Nfilt) float32 unit-norm templates.
        mu: (Nfilt,) float32 template norms (any shape of that size, e.g. MATLAB's 1 x Nfilt).
        call: (Nspikes,) integer centre channel of each spike (MATLAB passes call-1).
        iMatch: (Nchan, Nfilt) bool; iMatch[c, f] says template f may take spikes centred on c
            (its best channel is among iC[:, c]); see :func:`match_mask`.
        iC: (NchanNear, Nchan) integer neighbour channels of each channel, distinct within a
            column (MATLAB passes iC-1).
        lam: Params(6), the amplitude prior (0 in clusterSingleBatches).
        unassigned: label of spikes with no matching template of positive cost. 0 is the
            original, which adds them to template 0's dWU and nsp; -1 leaves them out.
        return_costs: also return dV, every spike-template cost (large: Nspikes x Nfilt).

    Returns a :class:`ClusteringResult` (dWU, iclust, dx, nsp, dV). A template with mu == 0 gets
    NaN costs and never wins, so an emptied cluster stays empty, as in the original.
    """
    xp = array_module(uproj)
    if unassigned not in (0, -1):
        raise ValueError(f"unassigned must be 0 (Kilosort2) or -1 (excluded), got {unassigned}")
    args = _prepare(xp, uproj, W, mu, call, iMatch, iC)
    return dispatch("cluster_projections", args[0])(*args, np.float32(lam), int(unassigned),
                                                    bool(return_costs))


def match_mask(*, iC, best_channels):
    """(Nchan, Nfilt) bool: iMatch[c, f] = best_channels[f] is in iC[:, c] (both 0-based).

    clusterSingleBatches.m builds it as ``sq(min(abs(single(iC) - Wheights), [], 1)) < .1``.
    """
    xp = array_module(iC)
    best = xp.asarray(best_channels).ravel()
    return xp.asfortranarray((xp.asarray(iC)[:, :, None] == best[None, None, :]).any(axis=0))


# ------------------------------------------------------------------------------ input checks
def float_array(xp, a, name, ndims):
    """``a`` as a float32 Fortran array; float32 is required (the kernels' precision)."""
    a = xp.asarray(a)
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32 (Kilosort works in single precision), got {a.dtype}")
    if a.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {a.shape}")
    return xp.asfortranarray(a)


def index_array(xp, a, name, n, hint):
    """``a`` as an int32 Fortran array after checking that its values lie in [0, n)."""
    a = xp.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer indices, got {a.dtype}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"{name} holds indices outside [0, {n}) (min {lo}, max {hi}); "
                             f"indices are 0-based ({hint})")
    return xp.asfortranarray(a.astype(np.int32, copy=False))


def neighbour_array(xp, iC):
    """iC (NchanNear, Nchan) as int32, checked: 0-based, distinct channels in each column
    (the kernels add one spike's neighbour channels in parallel)."""
    iC = xp.asarray(iC)
    if iC.ndim != 2 or iC.shape[0] < 1 or iC.shape[1] < 1:
        raise ValueError(f"iC must be (NchanNear, Nchan), got shape {iC.shape}")
    if iC.shape[0] > iC.shape[1]:
        raise ValueError(f"iC lists {iC.shape[0]} neighbours of each of only {iC.shape[1]} channels")
    iC = index_array(xp, iC, "iC", iC.shape[1], "MATLAB passes iC-1")
    srt = xp.sort(iC, axis=0)
    if bool((srt[1:] == srt[:-1]).any()):
        raise ValueError("iC repeats a channel within a column; each channel's neighbours must be distinct")
    return iC


def as_matrix(a, name, rows_per_rank, n_cols=None):
    """(n_rank, rows, cols) or (n_rank*rows, cols) -> the 2-D Fortran view and n_rank."""
    if a.ndim == 3:
        if a.shape[1] != rows_per_rank:
            raise ValueError(f"{name} has {a.shape[1]} channels per rank, expected {rows_per_rank}")
        n_rank = a.shape[0]
        a = a.reshape(n_rank * rows_per_rank, a.shape[2], order="F")
    if a.shape[0] % rows_per_rank or a.shape[0] == 0:
        raise ValueError(f"{name} has {a.shape[0]} rows, not a positive multiple of {rows_per_rank}")
    if n_cols is not None and a.shape[1] != n_cols:
        raise ValueError(f"{name} has {a.shape[1]} columns, expected {n_cols}")
    return a, a.shape[0] // rows_per_rank


def _prepare(xp, uproj, W, mu, call, iMatch, iC):
    iC = neighbour_array(xp, iC)
    n_near, n_chan = iC.shape
    uproj, n_rank = as_matrix(float_array(xp, uproj, "uproj", (2, 3)), "uproj", n_near)
    W, w_rank = as_matrix(float_array(xp, W, "W", (2, 3)), "W", n_chan)
    if w_rank != n_rank:
        raise ValueError(f"uproj has {n_rank} PCs per channel but W has {w_rank}")
    n_filt = W.shape[1]
    mu = float_array(xp, mu, "mu", (1, 2)).ravel(order="F")
    if mu.size != n_filt or n_filt == 0:
        raise ValueError(f"mu has {mu.size} entries for {n_filt} templates (need at least one)")
    call = index_array(xp, xp.asarray(call).ravel(order="F"), "call", n_chan, "MATLAB passes call-1")
    if call.size != uproj.shape[1]:
        raise ValueError(f"call has {call.size} spikes but uproj has {uproj.shape[1]}")
    iMatch = xp.asfortranarray(xp.asarray(iMatch, dtype=bool))
    if iMatch.shape != (n_chan, n_filt):
        raise ValueError(f"iMatch must be (Nchan, Nfilt) = {(n_chan, n_filt)}, got {iMatch.shape}")
    return uproj, W, mu, call, iMatch, iC


# ------------------------------------------------------------------------------ CPU (numba)
# The twins take the transposes of the Fortran arrays (C-ordered, one row per MATLAB column: a
# spike, a template, a channel), so every call has the same numba signature whatever the sizes.
@numba.njit(cache=True, nogil=True)
def near_inner_products(a, row_a, w, rows_w, iC, ch, n_rank):
    """For the four rows r of w listed in rows_w: sum_k sum_j a[row_a, j + n_rank*k] *
    w[r, j + n_rank*iC[ch, k]] in float32, k outer, j inner: a neighbourhood (sparse) template
    against all-channel (dense) ones, each sum in the kernels' order. The four independent sums
    are interleaved so that the CPU overlaps their add latencies (~3x faster than one at a time)."""
    r0, r1, r2, r3 = rows_w
    x0 = x1 = x2 = x3 = np.float32(0.0)
    for k in range(iC.shape[1]):
        c = n_rank * iC[ch, k]
        for j in range(n_rank):
            u = a[row_a, j + n_rank * k]
            x0 += u * w[r0, j + c]
            x1 += u * w[r1, j + c]
            x2 += u * w[r2, j + c]
            x3 += u * w[r3, j + c]
    return x0, x1, x2, x3


@numba.njit(cache=True, nogil=True)
def four_from(index, i, stop):
    """index[i:i+4], padded with index[stop-1] past ``stop`` (padding results are ignored)."""
    last = stop - 1
    return (index[i], index[min(i + 1, last)], index[min(i + 2, last)], index[min(i + 3, last)])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _cost(xsum, m, lam):
    """The matching cost; error_model='numpy' lets mu == 0 give NaN, as on the GPU."""
    ci = (xsum if xsum > 0 else np.float32(0.0)) + lam / m
    return ci * ci / (np.float32(1.0) + lam / (m * m)) - lam


@numba.njit(cache=True, nogil=True)
def templates_by_channel(match_t):
    """CSR lists of match: the templates f that channel c may match are
    index[start[c]:start[c+1]], in increasing order (so ties resolve as in the kernels' loop).
    Visiting only these spares testing all Nfilt flags for every spike."""
    n_filt, n_chan = match_t.shape
    start = np.zeros(n_chan + 1, np.int64)
    for f in range(n_filt):
        for c in range(n_chan):
            if match_t[f, c]:
                start[c + 1] += 1
    for c in range(n_chan):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    index = np.empty(start[n_chan], np.int64)
    for f in range(n_filt):
        for c in range(n_chan):
            if match_t[f, c]:
                index[fill[c]] = f
                fill[c] += 1
    return start, index


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _assign_twin(uproj_t, W_t, mu, call, match_t, iC_t, lam, unassigned, cost_t, want_cost,
                 iclust, dx):
    n_rank = uproj_t.shape[1] // iC_t.shape[1]
    start, index = templates_by_channel(match_t)
    for s in numba.prange(call.size):
        ch = call[s]
        if want_cost:
            cost_t[:, s] = np.nan  # not computed where match is false
        best = np.float32(0.0)
        best_id = unassigned
        stop = start[ch + 1]
        for i in range(start[ch], stop, 4):  # the matching templates, in increasing order
            xsums = near_inner_products(uproj_t, s, W_t, four_from(index, i, stop), iC_t, ch, n_rank)
            for q in range(min(4, stop - i)):
                f = index[i + q]
                c = _cost(xsums[q], mu[f], lam)
                if c > best:  # strict: the first template wins ties; NaN never wins
                    best = c
                    best_id = f
                if want_cost:
                    cost_t[f, s] = c
        iclust[s] = best_id
        dx[s] = best


@numba.njit(cache=True, nogil=True)
def _group_by_template(iclust, n_filt):
    """Counting sort: spikes of template f are order[start[f]:start[f+1]], in spike order."""
    start = np.zeros(n_filt + 1, np.int64)
    for s in range(iclust.size):
        if iclust[s] >= 0:
            start[iclust[s] + 1] += 1
    for f in range(n_filt):
        start[f + 1] += start[f]
    fill = start[:-1].copy()
    order = np.empty(start[n_filt], np.int64)
    for s in range(iclust.size):
        f = iclust[s]
        if f >= 0:
            order[fill[f]] = s
            fill[f] += 1
    return start, order


@numba.njit(parallel=True, cache=True, nogil=True)
def _average_twin(uproj_t, call, iC_t, start, order, dWU_t):
    """dWU[:, f] += each spike's projections on its channels, spikes in increasing order (the
    original's float32 summation order; one template per parallel task, so no races)."""
    n_near = iC_t.shape[1]
    n_rank = uproj_t.shape[1] // n_near
    for f in numba.prange(dWU_t.shape[0]):
        for i in range(start[f], start[f + 1]):
            s = order[i]
            ch = call[s]
            for k in range(n_near):
                c = iC_t[ch, k]
                for j in range(n_rank):
                    dWU_t[f, j + n_rank * c] += uproj_t[s, j + n_rank * k]


@register("cluster_projections", "cpu")
def _cluster_cpu(uproj, W, mu, call, iMatch, iC, lam, unassigned, return_costs):
    n_spikes, n_filt = call.size, W.shape[1]
    cost = np.empty((n_spikes, n_filt) if return_costs else (0, 0), np.float32, order="F")
    iclust = np.empty(n_spikes, np.int32)
    dx = np.empty(n_spikes, np.float32)
    _assign_twin(uproj.T, W.T, mu, call, iMatch.T, iC.T, lam, unassigned, cost.T, return_costs,
                 iclust, dx)
    start, order = _group_by_template(iclust, n_filt)
    dWU = np.zeros((W.shape[0], n_filt), np.float32, order="F")
    _average_twin(uproj.T, call, iC.T, start, order, dWU.T)
    nsp = np.diff(start).astype(np.int32)
    return ClusteringResult(dWU, iclust, dx, nsp, cost if return_costs else None)


# ------------------------------------------------------------------------------ CPU (numba) for distances.py
@numba.njit(parallel=True, cache=True, nogil=True)
def distances_twin(Ws_t, W_t, match_t, iC_t, Wh, mus, mu, unmatched, iclust, ds):
    """template_distances on the CPU (see distances.py); arguments are the transposes."""
    n_rank = Ws_t.shape[1] // iC_t.shape[1]
    two = np.float32(2.0)
    start, index = templates_by_channel(match_t)
    for t in numba.prange(Wh.size):
        ch = Wh[t]
        ms = mus[t]
        best = ms * ms
        best_id = unmatched
        stop = start[ch + 1]
        for i in range(start[ch], stop, 4):  # the matching templates, in increasing order
            xsums = near_inner_products(Ws_t, t, W_t, four_from(index, i, stop), iC_t, ch, n_rank)
            for q in range(min(4, stop - i)):
                f = index[i + q]
                m = mu[f]
                d = (m * m + ms * ms) - two * ms * m * xsums[q]  # the kernel's left-to-right order
                if d < best:  # strict: the first template wins ties
                    best = d
                    best_id = f
        iclust[t] = best_id
        ds[t] = best


# ------------------------------------------------------------------------------ CUDA (CuPy)
@register("cluster_projections", "cuda")
def _cluster_cuda(uproj, W, mu, call, iMatch, iC, lam, unassigned, return_costs):
    import cupy

    module = cuda_module("clustering.cu", (("CLUSTER_THREADS", _THREADS),
                                           ("CLUSTER_AVG_THREADS", _AVG_THREADS)))
    n_spikes, n_filt = call.size, W.shape[1]
    n_near, n_chan = iC.shape
    n_rank = uproj.shape[0] // n_near
    cost = cupy.empty((n_spikes, n_filt) if return_costs else (1, 1), cupy.float32, order="F")
    iclust = cupy.empty(n_spikes, cupy.int32)
    dx = cupy.empty(n_spikes, cupy.float32)
    dWU = cupy.zeros((W.shape[0], n_filt), cupy.float32, order="F")
    nsp = cupy.zeros(n_filt, cupy.int32)
    if n_spikes:
        dims = (np.int32(n_rank), np.int32(n_near), np.int32(n_chan))
        grid = ((n_spikes + _THREADS - 1) // _THREADS,)
        module.get_function("cluster_assign")(grid, (_THREADS,), (
            uproj, W, mu, call, iMatch, iC, cost, np.int32(return_costs), iclust, dx,
            np.int64(n_spikes), np.int32(n_filt), *dims, np.float32(lam), np.int32(unassigned)))
        module.get_function("cluster_average")((n_filt,), (_AVG_THREADS,), (
            uproj, call, iC, iclust, dWU, nsp, np.int64(n_spikes), *dims))
    return ClusteringResult(dWU, iclust, dx, nsp, cost if return_costs else None)
