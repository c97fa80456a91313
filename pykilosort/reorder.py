"""Kilosort2 batch reordering (clusterSingleBatches.m, sortBatches2.m)."""
from __future__ import annotations

import logging

import numpy as np

from .backend import CPU, Backend
from .logs import progress

logger = logging.getLogger(__name__)

__all__ = ["sort_batches", "initialize_wdata", "cluster_batch", "batch_dissimilarity",
           "cluster_single_batches"]


def sort_batches(ccb0: np.ndarray, *, n_iter: int = 200, eta: float = 1.0):
    """Embed batches on a line so that log(1 + distance^2) matches their dissimilarity ``ccb0``
    (nBatches, nBatches), by gradient descent from the first singular vector (sortBatches2.m).

    Returns (ccb1, isort, xs): the reordered matrix ccb0[isort][:, isort], the 0-based order, and
    the (nBatches,) embedding positions.
    """
    from .snippets import eig_components  # the port of svdecon

    ccb0 = np.asarray(ccb0, dtype=np.float64)
    u1 = eig_components(ccb0, 1)[:, 0]
    xs = 0.01 * u1 / np.std(u1, ddof=1)
    for _ in range(n_iter):
        diff = xs[:, None] - xs[None, :]
        ds = diff ** 2
        err = ccb0 - np.log1p(ds)
        err = (err - err.mean()) / (1 + ds)
        err2 = err * diff
        xs = xs - eta * (-err2.mean(axis=1) + err2.mean(axis=0))
    isort = np.argsort(xs, kind="stable")
    return ccb0[np.ix_(isort, isort)], isort, xs


def initialize_wdata(*, call: np.ndarray, uproj: np.ndarray, n_chan: int, n_pcs: int, n_filt: int,
                     iC: np.ndarray, stream):
    """Seed k-means with ``n_filt`` random spikes (initializeWdata2.m).

    Args:
        call: (n_spikes,) 0-based best channel of each spike.
        uproj: (n_pcs * NchanNear, n_spikes) float32 PC features on the channel's neighbourhood.
        iC: (NchanNear, n_chan) 0-based neighbours of each channel (get_closest_channels).
        stream: random stream; ``stream.randperm(n_spikes)`` picks the spikes.

    Returns:
        W: (n_pcs * n_chan, n_filt) float32 unit-norm templates (spike features placed on their
        channels), mu: (n_filt,) float32 their norms, wheights: (n_filt,) 0-based best channel
        (largest squared first-PC feature), irand: (n_filt,) 0-based spikes picked.
    """
    irand = stream.randperm(uproj.shape[1])[:n_filt]
    w = np.zeros((n_pcs, n_chan, n_filt), np.float32, order="F")
    for t, spike in enumerate(irand):
        w[:, iC[:, call[spike]], t] = uproj[:, spike].reshape(n_pcs, -1, order="F")
    w = w.reshape(n_pcs * n_chan, n_filt, order="F")
    mu = np.sqrt((w ** 2).sum(axis=0))
    w = w / (np.float32(1e-5) + mu)
    first_pc = w.reshape(n_pcs, n_chan, n_filt, order="F")[0] ** 2
    return w, mu, first_pc.argmax(axis=0), irand


# ---------------------------------------------------------------------- clusterSingleBatches
_KMEANS_ITERS = 10        # clusterSingleBatches: k-means iterations per batch
_NCHAN_NEAR_MAX = 17      # min(Nchan, 2*8+1) neighbours (the original's NchanMax in mexThSpkPC)
_NRANK_PC = 3             # the original hard-codes 3 PC features per channel here


def cluster_batch(*, uproj, call, iC, n_chan: int, n_filt: int, stream, legacy: bool = False,
                  backend: Backend = CPU):
    """k-means of one batch's spikes in PC space (clusterSingleBatches.m's inner loop).

    legacy: True adds spikes that match no template to template 0, as mexClustering2 does;
    False leaves them out of every template's mean.

    Returns (W0 (3, NchanNear, n_filt) float32 unit-norm templates on their best channel's
    neighbourhood, mu (n_filt,), nsp (n_filt,), wheights (n_filt,) 0-based best channels).
    The k-means kernel runs on ``backend``; the updates between its calls on the host.
    """
    from .kernels import cluster_projections, match_mask

    n_pcs, put = _NRANK_PC, backend.put
    w, mu, wheights, _ = initialize_wdata(call=call, uproj=uproj, n_chan=n_chan, n_pcs=n_pcs,
                                          n_filt=n_filt, iC=iC, stream=stream)
    uproj_d, call_d, iC_d = put(uproj), put(call), put(iC)
    for _ in range(_KMEANS_ITERS):
        res = backend.fetch(cluster_projections(
            uproj=uproj_d, W=put(np.asfortranarray(w, np.float32)),
            mu=put(np.asarray(mu, np.float32)), call=call_d,
            iMatch=put(match_mask(iC=iC, best_channels=wheights)), iC=iC_d,
            unassigned=0 if legacy else -1))
        nsp = res.nsp
        dwu = res.dWU / (np.float32(1e-5) + nsp.astype(np.float32))
        mu = np.sqrt((dwu ** 2).sum(axis=0))
        w = dwu / (np.float32(1e-5) + mu)
        wheights = (w.reshape(n_pcs, n_chan, n_filt, order="F")[0] ** 2).argmax(axis=0)
    w3 = w.reshape(n_pcs, n_chan, n_filt, order="F")
    w0 = np.stack([w3[:, iC[:, wheights[t]], t] for t in range(n_filt)], axis=2)
    w0 = w0 / (np.float32(1e-5) + np.sqrt((w0 ** 2).sum(axis=(0, 1))))
    return w0.astype(np.float32), mu.astype(np.float32), nsp, wheights


def batch_dissimilarity(*, Ws, mus, ns, Whs, iC, n_chan: int, backend: Backend = CPU) -> np.ndarray:
    """(nBatches, nBatches) dissimilarity ccb: spike-weighted mean template distance between
    batches (clusterSingleBatches.m, second loop), before z-scoring; the kernel on ``backend``."""
    from .kernels import match_mask, template_distances

    n_pcs, n_near, n_filt, n_batches = Ws.shape
    put = backend.put
    Ws_d, iC_d, Whs_d, mus_d = put(Ws), put(iC), put(Whs), put(mus)
    ccb = np.zeros((n_batches, n_batches), np.float32)
    for ib in range(n_batches):
        w = np.zeros((n_pcs, n_chan, n_filt), np.float32, order="F")
        for t in range(n_filt):
            w[:, iC[:, Whs[t, ib]], t] = Ws[:, :, t, ib]
        res = backend.fetch(template_distances(
            Ws=Ws_d, W=put(w), iMatch=put(match_mask(iC=iC, best_channels=Whs[:, ib])), iC=iC_d,
            Wh=Whs_d, mus=mus_d, mu=put(np.ascontiguousarray(mus[:, ib]))))
        ds = np.maximum(0, np.asarray(res.ds).reshape(n_filt, n_batches, order="F"))
        total = ns.mean(axis=0)  # 0 for a batch without templates: no distance to weigh (0)
        ccb[ib] = np.divide((np.sqrt(ds) * ns).mean(axis=0), total, out=np.zeros(n_batches,
                            np.float32), where=total > 0)
    return ccb


def cluster_single_batches(ctx) -> dict:
    """KS2 batch reordering: per-batch k-means templates, their pairwise distances, and a 1-D
    embedding of the batches; returns rez fields iorig (0-based order), ccb, ccbsort, xs.

    The original clusters batch min(nBatches-1, i) for i = 1..nBatches: the last batch is never
    used and the one before it twice. ``matlab_compat=True`` keeps that; by default each batch is
    clustered once. A batch with too few spikes reuses the previous batch's templates, as in the
    original.
    """
    from .kernels import threshold_spike_pcs
    from .neighbours import get_closest_channels
    from .procfile import proc_batch_reader, unscaled
    from .random import make_stream
    from .snippets import extract_pc_from_snippets

    p, probe = ctx.params, ctx.probe_good
    nbatch = int(ctx.intermediate.Nbatch)
    if not p.reorder or nbatch < 2:
        return {"iorig": np.arange(nbatch), "ccb": np.zeros((nbatch, nbatch), np.float32)}
    stream = make_stream(p.random_stream, p.CSBseed if p.CSBseed is not None else p.seed)
    read = proc_batch_reader(ctx)
    nt0min = ctx.derived.nt0min
    wpca = extract_pc_from_snippets(read, Nbatch=nbatch, nt0=p.nt0, nt0min=nt0min,
                                    scaleproc=p.scaleproc, spk_th=p.spkTh, loc_range=p.loc_range,
                                    long_range=p.long_range, n_pcs=_NRANK_PC)
    n_chan, n_filt = probe.Nchan, int(np.ceil(probe.Nchan / 2))
    iC = get_closest_channels(xc=probe.xc, yc=probe.yc, sigma_mask=p.sigmaMask,
                              n_closest=min(n_chan, _NCHAN_NEAR_MAX))[0]
    Ws = np.zeros((_NRANK_PC, iC.shape[0], n_filt, nbatch), np.float32, order="F")
    mus = np.zeros((n_filt, nbatch), np.float32, order="F")
    ns = np.zeros((n_filt, nbatch), np.float32)
    Whs = np.zeros((n_filt, nbatch), np.int64)
    last, put = None, ctx.backend.put
    wpca_d, iC_d = put(wpca[:, :_NRANK_PC].astype(np.float32)), put(iC)
    for ib in progress(range(nbatch), desc="reorder: cluster batches", total=nbatch):
        k = min(nbatch - 2, ib) if p.matlab_compat else ib
        data = put(unscaled(read(k), p.scaleproc))
        spikes = ctx.backend.fetch(threshold_spike_pcs(
            data=data, wpca=wpca_d, iC=iC_d, nt0min=nt0min, spk_th=p.ThPre,
            legacy_coverage=p.matlab_compat))
        uproj, call = np.asarray(spikes.features), np.asarray(spikes.channels)
        order = np.lexsort(uproj[::-1])  # sortrows(uproj'): the spike order no longer matters
        uproj, call = np.asfortranarray(uproj[:, order]), call[order]
        if np.isnan(uproj).any():
            break
        if uproj.shape[1] > n_filt:
            last = cluster_batch(uproj=uproj, call=call, iC=iC, n_chan=n_chan, n_filt=n_filt,
                                 stream=stream, legacy=p.matlab_compat, backend=ctx.backend)
        if last is not None:
            Ws[..., ib], mus[:, ib], ns[:, ib], Whs[:, ib] = last
        else:
            logger.warning("batch %d has only %d spikes (< %d templates)", ib, uproj.shape[1], n_filt)
    if last is None:
        logger.warning("no batch has more than %d spikes crossing ThPre=%g: batches keep their "
                       "order (is the recording empty, or ThPre too high?)", n_filt, p.ThPre)
        return {"iorig": np.arange(nbatch), "ccb": np.zeros((nbatch, nbatch))}
    ccb = batch_dissimilarity(Ws=Ws, mus=mus, ns=ns, Whs=Whs, iC=iC, n_chan=n_chan,
                              backend=ctx.backend)
    ccb0 = _zscore_columns(ccb)
    ccb0 = ccb0 + ccb0.T
    ccbsort, iorig, xs = sort_batches(ccb0)
    return {"iorig": iorig, "ccb": ccb0, "ccbsort": ccbsort, "xs": xs}


def _zscore_columns(x: np.ndarray) -> np.ndarray:
    """MATLAB zscore(x, 1, 1): population std per column; a constant column becomes 0."""
    x = np.asarray(x, np.float64)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd == 0, 1, sd)
