"""template_distances: each template of every batch against its nearest template of one batch.

The port of Kilosort2's mexDistances2 (CUDA kernel in cuda/distances.cu + numba twin), called
once per batch by clusterSingleBatches.m (v2.0) to fill the batch dissimilarity matrix ccb:

    [iclust, ds] = mexDistances2(Params, Ws, W, iMatch, iC-1, Whs-1, mus, mu)
    Params = [Nfilt*nBatches NrankPC Nfilt 0 NrankPC*Nchan 0 NchanNear Nchan]

For template t (all batches) with unit-norm shape Ws[:, t], norm mus[t] and best channel Wh[t],
ds[t] is the smallest squared distance ``mu[f]^2 + mus[t]^2 - 2 mus[t] mu[f] <Ws[:, t], W[:, f]>``
over the primary batch's templates f whose best channel is a neighbour of Wh[t] (iMatch), capped
at mus[t]^2, and iclust[t] is that f. No cost matrix is materialised (the original allocates
Nfilt x Nfilt*nBatches floats per call); the results are the same, bit for bit on both devices.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import array_module
# The numba twin lives in clustering.py beside the helpers it shares: numba's on-disk cache only
# notices edits to the file of the cached function itself, not to functions it calls elsewhere.
from .clustering import as_matrix, distances_twin, float_array, index_array, neighbour_array
from .registry import cuda_module, dispatch, register

__all__ = ["template_distances", "DistancesResult"]

_THREADS = 256  # nearest_template: one thread per template


class DistancesResult(NamedTuple):
    """The two outputs of mexDistances2, shaped like ``mus``, on the device of the inputs."""

    iclust: Any  # int32: 0-based nearest primary template (`unmatched` if none beats mus^2)
    ds: Any  # float32: its squared distance, or mus^2


def template_distances(*, Ws, W, iMatch, iC, Wh, mus, mu, unmatched: int = 0) -> DistancesResult:
    """Squared distance of every template to the nearest matching primary template (mexDistances2).

    Args (numpy arrays run the numba twin, cupy arrays the CUDA kernel; indices 0-based):
        Ws: (n_rank, NchanNear, Nfilt, nBatches), (n_rank, NchanNear, Ntot) or
            (n_rank*NchanNear, Ntot) float32 unit-norm templates of all batches on the
            neighbours of their best channels (column t = template t % Nfilt of batch t // Nfilt).
        W: (n_rank, Nchan, Nfilt) or (n_rank*Nchan, Nfilt) float32: the primary batch's
            templates scattered back onto all channels.
        iMatch: (Nchan, Nfilt) bool; iMatch[c, f]: primary template f's best channel is among
            iC[:, c] (see :func:`pykilosort.kernels.clustering.match_mask`).
        iC: (NchanNear, Nchan) integer neighbour channels, distinct within a column (iC-1).
        Wh: Ntot integers (e.g. (Nfilt, nBatches)): best channel of each template (Whs-1).
        mus: Ntot float32 (e.g. (Nfilt, nBatches)): template norms.
        mu: (Nfilt,) float32 norms of the primary batch's templates.
        unmatched: iclust of templates that no primary template beats: 0 in Kilosort 2.0
            (indistinguishable from template 0), -1 in Kilosort 2.5.

    Returns :class:`DistancesResult` (iclust, ds), each shaped like ``mus`` (Fortran order, so
    ``ds.ravel(order='F')`` is MATLAB's ds column).
    """
    xp = array_module(Ws)
    if unmatched not in (0, -1):
        raise ValueError(f"unmatched must be 0 (Kilosort 2.0) or -1 (Kilosort 2.5), got {unmatched}")
    args, shape = _prepare(xp, Ws, W, iMatch, iC, Wh, mus, mu)
    iclust, ds = dispatch("template_distances", args[0])(*args, int(unmatched))
    return DistancesResult(iclust.reshape(shape, order="F"), ds.reshape(shape, order="F"))


def _prepare(xp, Ws, W, iMatch, iC, Wh, mus, mu):
    iC = neighbour_array(xp, iC)
    n_near, n_chan = iC.shape
    Ws = float_array(xp, Ws, "Ws", (2, 3, 4))
    if Ws.ndim == 4:  # (n_rank, NchanNear, Nfilt, nBatches): all batches' templates side by side
        Ws = Ws.reshape(Ws.shape[:2] + (Ws.shape[2] * Ws.shape[3],), order="F")
    Ws, n_rank = as_matrix(Ws, "Ws", n_near)
    W, w_rank = as_matrix(float_array(xp, W, "W", (2, 3)), "W", n_chan)
    if w_rank != n_rank:
        raise ValueError(f"Ws has {n_rank} PCs per channel but W has {w_rank}")
    n_filt, n_total = W.shape[1], Ws.shape[1]
    mu = float_array(xp, mu, "mu", (1, 2)).ravel(order="F")
    if mu.size != n_filt:
        raise ValueError(f"mu has {mu.size} entries for the {n_filt} templates of W")
    mus = float_array(xp, mus, "mus", (1, 2))
    shape = mus.shape
    mus = mus.ravel(order="F")
    Wh = index_array(xp, xp.asarray(Wh).ravel(order="F"), "Wh", n_chan, "MATLAB passes Whs-1")
    if mus.size != n_total or Wh.size != n_total:
        raise ValueError(f"Ws has {n_total} templates but mus has {mus.size} and Wh {Wh.size}")
    iMatch = xp.asfortranarray(xp.asarray(iMatch, dtype=bool))
    if iMatch.shape != (n_chan, n_filt):
        raise ValueError(f"iMatch must be (Nchan, Nfilt) = {(n_chan, n_filt)}, got {iMatch.shape}")
    return (Ws, W, iMatch, iC, Wh, mus, mu), shape


# ------------------------------------------------------------------------------ CPU (numba)
@register("template_distances", "cpu")
def _distances_cpu(Ws, W, iMatch, iC, Wh, mus, mu, unmatched):
    iclust = np.empty(Wh.size, np.int32)
    ds = np.empty(Wh.size, np.float32)
    distances_twin(Ws.T, W.T, iMatch.T, iC.T, Wh, mus, mu, unmatched, iclust, ds)
    return iclust, ds


# ------------------------------------------------------------------------------ CUDA (CuPy)
@register("template_distances", "cuda")
def _distances_cuda(Ws, W, iMatch, iC, Wh, mus, mu, unmatched):
    import cupy

    kernel = cuda_module("distances.cu", (("DIST_THREADS", _THREADS),)).get_function("nearest_template")
    n_total = Wh.size
    n_near, n_chan = iC.shape
    iclust = cupy.empty(n_total, cupy.int32)
    ds = cupy.empty(n_total, cupy.float32)
    if n_total:
        grid = ((n_total + _THREADS - 1) // _THREADS,)
        kernel(grid, (_THREADS,), (
            Ws, W, mus, mu, iMatch, iC, Wh, iclust, ds, np.int64(n_total), np.int32(W.shape[1]),
            np.int32(Ws.shape[0] // n_near), np.int32(n_near), np.int32(n_chan), np.int32(unmatched)))
    return iclust, ds
