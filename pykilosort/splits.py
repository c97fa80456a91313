"""Splits of bimodal clusters ("bimodal pursuit"): splitAllClusters.m of Kilosort2 (v2.0, v2.5.2).

For each cluster of at least 300 spikes, a direction in the space of its spikes' PC features is
refined by 50 rounds of a two-Gaussian mixture fit on the projections (the direction itself is
re-estimated every other round after round 10). The cluster is split in two when

- the two halves are not refractory with each other (a refractory cross-correlogram means one
  neuron: Q < 0.25 and R < 0.05 vetoes the split),
- their mean waveforms differ (correlation <= 0.9 or amplitudes differing by >= 20%),
- and the smaller half holds > 5% and > 300 of the spikes, each assigned with mean confidence
  > AUCsplit.

The original runs it twice: ``init='svd'`` starts from the features' first principal direction
(KS2 and KS2.5), ``init='mean'`` from the mean feature vector, i.e. an amplitude split (KS2 only).
A split piece keeps being tested until it no longer splits. At the end every template is
re-estimated from its waveform dWU (mexSVDsmall2), and similarities and neighbours recomputed.

Precision follows the original's single-precision arrays (features, projections, mixture means and
variances) and double-precision responsibilities, so splits match the original's run under Octave.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import scipy.signal

from .correlograms import ccg, nanmin
from .kernels import template_svd
from .logs import progress
from .merges import cluster_members
from .snippets import eig_components
from .templates import template_neighbours
from .utils import release_mapped_pages

logger = logging.getLogger(__name__)

__all__ = ["split_all_clusters", "SplitResult", "bimodal_pursuit", "running_average"]

MIN_SPIKES = 300          # clusters and split pieces need more spikes than this
MIN_FRACTION = 0.05       # the smaller piece's share of the cluster
VETO_Q, VETO_R = 0.25, 0.05
SAME_WAVEFORM_CC, SAME_AMPLITUDE_R = 0.9, 0.2
N_EM_ROUNDS = 50
RUNNING_AVERAGE_SIG = 250  # spikes (v2.0 only): my_conv2(clp, 250, 1)


class SplitResult(NamedTuple):
    templates: np.ndarray  # (n_spikes,) int32 0-based cluster of each spike
    dWU: np.ndarray        # (nt0, Nchan, Nfilt) float64 waveforms (split ones from PC means)
    W: np.ndarray          # (nt0, Nfilt, 3) float64, re-estimated by template_svd
    U: np.ndarray          # (Nchan, Nfilt, 3) float64
    mu: np.ndarray         # (Nfilt,) float64
    simScore: np.ndarray   # (Nfilt, Nfilt) float32; 1 between pieces of one split
    iNeigh: np.ndarray     # (Nnearest, Nfilt) 0-based most similar templates
    iNeighPC: np.ndarray   # (NchanNear, Nfilt) 0-based channels of each template's PC features
    isplit: np.ndarray     # (Nfilt, Nfilt) bool: rez.isplit (pairs of pieces of one split)
    splits: np.ndarray     # (n_splits, 2) int32 (cluster split, new cluster), in order
    n_ccg_vetoes: int      # splits voided because the pieces were refractory with each other


def running_average(x: np.ndarray, sig: float) -> np.ndarray:
    """my_conv2(x, sig, 1): Gaussian smoothing along axis 0 (taps +-ceil(4 sig)), each output
    divided by the kernel mass inside the array (zero padding renormalised). float64 FFT
    convolution, returned as float32 like the original's single arrays."""
    tmax = int(np.ceil(4 * sig))
    g = np.exp(-np.arange(-tmax, tmax + 1) ** 2 / (2 * sig ** 2))
    g = g / g.sum()
    x = np.asarray(x, np.float64)
    smooth = scipy.signal.fftconvolve(x, g[:, None], mode="full", axes=0)[tmax: tmax + len(x)]
    norm = scipy.signal.fftconvolve(np.ones(len(x)), g, mode="full")[tmax: tmax + len(x)]
    return (smooth / norm[:, None]).astype(np.float32)


def _var(x: np.ndarray) -> np.float32:
    """MATLAB/Octave var of a single vector (n-1 normalisation; 0 for one element, NaN for none)."""
    if x.size == 0:
        return np.float32(np.nan)
    if x.size == 1:
        return np.float32(0)
    return np.float32(np.sum((x - x.mean(dtype=np.float32)) ** 2, dtype=np.float32) / np.float32(x.size - 1))


def _mean32(x: np.ndarray):
    """MATLAB mean(x, 1) in single precision; NaN (of the row's shape) when x has no rows."""
    if x.shape[0] == 0:
        return np.full(x.shape[1:], np.nan, np.float32)
    return x.mean(axis=0, dtype=np.float32)


def _log_gauss(x, mu, s, logp):
    """-1/2*log(s) - (x-mu).^2/(2*s) + log(p) in single precision (the original's arrays)."""
    return (np.float32(-0.5) * np.log(s) - (x - mu) ** 2 / (np.float32(2) * s)) + np.float32(logp)


def bimodal_pursuit(clp: np.ndarray, w: np.ndarray):
    """Fit two 1-D Gaussians to the projections of ``clp`` (n, nfeat) float32 on a direction
    refined from ``w`` (nfeat,). Returns rs (n, 2) float64 responsibilities."""
    n = clp.shape[0]
    x = clp @ w
    m = x.mean(dtype=np.float32)
    hi, lo = x[x > m], x[x < m]
    s1, s2 = _var(hi), _var(lo)
    mu1, mu2 = _mean32(hi), _mean32(lo)
    p = float(np.mean(x > m))
    logp = np.zeros((n, 2))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(1, N_EM_ROUNDS + 1):
            logp[:, 0] = _log_gauss(x, mu1, s1, np.log(p))
            logp[:, 1] = _log_gauss(x, mu2, s2, np.log(1 - p))
            lmax = np.fmax(logp[:, :1], logp[:, 1:])  # MATLAB's max skips NaN
            rs = np.exp(logp - lmax)
            rs = rs / (rs[:, :1] + rs[:, 1:])
            r1, r2 = rs[:, 0].astype(np.float32), rs[:, 1].astype(np.float32)
            sum1, sum2 = np.cumsum(rs[:, 0])[-1], np.cumsum(rs[:, 1])[-1]  # sequential sums
            n1, n2, p = np.float32(sum1), np.float32(sum2), sum1 / n
            mu1, mu2 = np.dot(r1, x) / n1, np.dot(r2, x) / n2
            s1, s2 = np.dot(r1, (x - mu1) ** 2) / n1, np.dot(r2, (x - mu2) ** 2) / n2
            if k > 10 and k % 2 == 1:
                # given the assignments, the direction that best separates the two Gaussians
                weight = r1 / s1 + r2 / s2
                sts = (clp.T @ (clp * weight[:, None])) / np.float32(n)
                stmu = (clp.T @ (r1 * mu1 / s1 + r2 * mu2 / s2)) / np.float32(n)
                w = _solve_right(stmu, sts)
                w = w / np.sqrt(np.sum(w ** 2, dtype=np.float32))
                x = clp @ w
    return rs


def _solve_right(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """MATLAB b/a for a row vector b: x with x a = b, in single precision."""
    try:
        return np.linalg.solve(a.T, b).astype(np.float32)
    except np.linalg.LinAlgError:  # singular: MATLAB warns and returns Inf/NaN
        return np.full_like(b, np.nan)


def _flat_features(fpc: np.ndarray) -> np.ndarray:
    """(n, 3, NchanNear) -> (n, 3*NchanNear) with the PC index fastest (MATLAB clp0(:,:))."""
    return np.ascontiguousarray(np.transpose(fpc, (0, 2, 1)).reshape(fpc.shape[0], -1),
                                dtype=np.float32)


class _Candidate(NamedTuple):
    ilow: np.ndarray  # spikes of the first Gaussian
    c1: np.ndarray    # (nt0, NchanNear) float32 mean waveform of the first piece
    c2: np.ndarray    # the second piece's


def _try_split(clp0, seconds, *, init: str, wpca, auc_split: float, running_avg: bool):
    """One cluster's split decision; returns (_Candidate or None, vetoed_by_ccg)."""
    clp = clp0 - clp0.mean(axis=0, dtype=np.float32)
    if running_avg:  # the projections are not drift corrected (v2.0)
        clp = clp - running_average(clp, RUNNING_AVERAGE_SIG)
    if init == "svd":
        w = eig_components(clp.T, 1)[:, 0]  # svdecon(clp') u(:,1), single precision
    else:
        w = clp0.mean(axis=0, dtype=np.float32)
        w = w / np.float32(np.sum(w ** 2, dtype=np.float32) ** 0.5)
    rs = bimodal_pursuit(clp, w)
    ilow = rs[:, 0] > rs[:, 1]
    plow = rs[ilow, 0].mean() if ilow.any() else np.nan     # MATLAB: mean([]) is NaN
    phigh = rs[~ilow, 1].mean() if not ilow.all() else np.nan
    nremove = min(ilow.mean(), (~ilow).mean())
    score = ccg(seconds[ilow], seconds[~ilow])
    if score.Q < VETO_Q and score.R < VETO_R:
        return None, True
    n_pc = wpca.shape[1]
    c1 = wpca @ _mean32(clp0[ilow]).reshape(n_pc, -1, order="F")
    c2 = wpca @ _mean32(clp0[~ilow]).reshape(n_pc, -1, order="F")
    with np.errstate(invalid="ignore", divide="ignore"):
        cc = np.corrcoef(c1.ravel().astype(np.float64), c2.ravel().astype(np.float64))[0, 1]
        n1, n2 = np.sqrt(np.sum(c1 ** 2)), np.sqrt(np.sum(c2 ** 2))
        r0 = 2 * abs(n1 - n2) / (n1 + n2)
    if cc > SAME_WAVEFORM_CC and r0 < SAME_AMPLITUDE_R:
        return None, False
    if nremove > MIN_FRACTION and nanmin(np.array([plow, phigh])) > auc_split and \
            min(ilow.sum(), (~ilow).sum()) > MIN_SPIKES:
        return _Candidate(ilow, c1, c2), False
    return None, False


def split_all_clusters(*, times: np.ndarray, templates: np.ndarray, features, rows: np.ndarray,
                       dWU: np.ndarray, W: np.ndarray, sim: np.ndarray,
                       wpca: np.ndarray, iC: np.ndarray, Ka: np.ndarray, Kb: np.ndarray,
                       fs: float, nt0min: int, auc_split: float, init: str,
                       running_avg: bool = True, legacy_swap: bool = False) -> SplitResult:
    """splitAllClusters(rez, flag): ``init='svd'`` is flag 1, ``init='mean'`` flag 0.

    Args:
        times: (n,) spike samples; templates: (n,) 0-based clusters (st3(:,1:2)).
        features: (n_all, 3, NchanNear) float32 PC features (rez.cProjPC, may be memory-mapped);
            spike i's are ``features[rows[i]]`` (rows: (n,) int64, ascending).
        dWU: (nt0, Nchan, Nfilt) waveforms; W: (nt0, Nfilt, 3) temporal components (the
            starting point of the final template_svd); sim: (Nfilt, Nfilt) rez.simScore.
            (rez.iNeigh and iNeighPC are recomputed at the end, as in the original.)
        wpca: (nt0, 3) temporal PCs of the features (ops.wPCA); iC: (NchanNear, Nchan) 0-based
            neighbourhoods (get_closest_channels); Ka, Kb: get_kernels(nt0, nt0min).
        auc_split: ops.AUCsplit; running_avg: subtract a 250-spike running average of the
            features first (v2.0; False in v2.5.2).
        legacy_swap: the original gives the new cluster the mean waveform of the spikes that stay
            and vice versa (MATLAB: dWU(:,:,Nfilt) = c2, st3(isp(ilow),2) = Nfilt with c1 the
            mean of ilow); True reproduces it, False gives each piece its own waveform.
    """
    labels = np.asarray(templates, np.int32).copy()
    seconds = np.asarray(times, np.float64) / fs
    wpca = np.asarray(wpca, np.float32)
    dwu = np.array(dWU, np.float64, order="F", copy=True)
    n0 = dwu.shape[2]
    iW = list(np.abs(dwu[nt0min - 1]).argmax(axis=0))
    members = cluster_members(labels, n0)
    new_dwu: list[np.ndarray] = []          # waveforms of the clusters created here
    simscore = np.array(sim, np.float32, copy=True)
    splits, vetoes, ik = [], 0, 0
    bar = progress(None, desc=f"splits ({init})", total=len(iW), unit="cluster")
    while ik < len(iW):
        bar.total, bar.n = len(iW), ik
        bar.refresh()
        isp = members[ik]
        if isp.size < MIN_SPIKES:
            ik += 1
            continue
        clp0 = _flat_features(np.asarray(features[np.asarray(rows)[isp]]))
        # a memory-mapped cProjPC's pages read would stay resident: over all clusters, the
        # whole file (384 bytes a spike at 32 channels), growing with the recording
        release_mapped_pages(features)
        cand, vetoed = _try_split(clp0, seconds[isp], init=init, wpca=wpca, auc_split=auc_split,
                                  running_avg=running_avg)
        vetoes += vetoed
        if cand is None:
            ik += 1
            continue
        new = len(iW)
        chans = iC[:, iW[ik]]
        stay, go = (cand.c1, cand.c2) if legacy_swap else (cand.c2, cand.c1)
        _column(dwu, new_dwu, ik, n0)[:, chans] = stay
        new_dwu.append(np.zeros(dwu.shape[:2]))
        new_dwu[-1][:, chans] = go
        iW.append(iW[ik])
        labels[isp[cand.ilow]] = new
        members[ik], members_new = isp[~cand.ilow], isp[cand.ilow]
        members.append(members_new)
        simscore = _grow_similarity(simscore, ik)
        splits.append((ik, new))
        logger.debug("split cluster %d: %d spikes to new cluster %d", ik, members_new.size, new)
        # the piece that stays is tested again; the new one when the loop reaches it
    bar.close()
    logger.info("splits (%s): %d clusters split, %d splits voided by refractory CCGs", init,
                len(splits), vetoes)
    return _finish(labels=labels, dwu=dwu, new_dwu=new_dwu, W=W, wpca=wpca, iW=iW, iC=iC,
                   Ka=Ka, Kb=Kb, nt0min=nt0min, simscore=simscore, splits=splits, vetoes=vetoes)


def _column(dwu, new_dwu, k: int, n0: int) -> np.ndarray:
    """Template k's (nt0, Nchan) waveform, whether it existed before the splits or not."""
    return dwu[:, :, k] if k < n0 else new_dwu[k - n0]


def _grow_similarity(sim: np.ndarray, ik: int) -> np.ndarray:
    """simScore with a new last row and column copied from template ik's, and 1 between them."""
    n = sim.shape[0]
    out = np.zeros((n + 1, n + 1), np.float32)
    out[:n, :n] = sim
    out[:n, n] = sim[:, ik]
    out[n, :] = out[ik, :]
    out[ik, n] = out[n, ik] = 1
    return out


def _finish(*, labels, dwu, new_dwu, W, wpca, iW, iC, Ka, Kb, nt0min, simscore, splits,
            vetoes) -> SplitResult:
    """Re-estimate every template from dWU (mexSVDsmall2), then similarities and neighbours."""
    if new_dwu:
        dwu = np.concatenate([dwu, np.stack(new_dwu, axis=2)], axis=2)
    n_new = dwu.shape[2] - W.shape[1]
    w0 = np.concatenate([np.asarray(W, np.float64),
                         np.repeat(wpca.astype(np.float64)[:, None, :], n_new, axis=1)], axis=1)
    iw = np.asarray(iW, np.int64)
    svd = template_svd(np.asfortranarray(dwu), np.asfortranarray(w0), iC=iC, iW=iw, Ka=Ka, Kb=Kb,
                       nt0min=nt0min)
    W1, U1, mu1 = np.asarray(svd.W), np.asarray(svd.U), np.asarray(svd.mu, np.float64).ravel()
    n_nearest = min(iC.shape[1], 32)
    wtw, ilist = template_neighbours(W1, U1, n_nearest)
    isplit = simscore == 1
    sim = wtw.max(axis=2)
    sim[isplit] = 1
    return SplitResult(templates=labels, dWU=dwu, W=W1, U=U1, mu=mu1, simScore=sim,
                       iNeigh=ilist, iNeighPC=np.asarray(iC)[:, iw], isplit=isplit,
                       splits=np.array(splits, np.int32).reshape(-1, 2), n_ccg_vetoes=int(vetoes))
