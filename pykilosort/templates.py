"""Template bookkeeping of learnTemplates (Kilosort2 v2.0 mainLoop): channel overlap between
templates (getMeUtU), zero-lag similarity (getMeWtW2), triage (triageTemplates2) and memorizeW.

Shapes follow the original: W (nt0, Nfilt, Nrank) temporal components, U (Nchan, Nfilt, Nrank)
spatial components, dWU (nt0, Nchan, Nfilt) running-average waveforms, mu (Nfilt,) amplitudes,
nsp (Nfilt,) spike-count estimates. Indices are 0-based.
"""
from __future__ import annotations

import numpy as np

from .backend import CPU, Backend
from .kernels import template_cross_correlations

__all__ = ["template_channel_overlap", "template_similarity", "template_neighbours",
           "triage_templates", "memorize_w"]

_TRIAGE_SD = np.sqrt(10.0)  # triageTemplates2's hard-coded spread of amplitudes
_TRIAGE_SIMILARITY = 0.9
_NRANK = 3


def template_channel_overlap(*, iW: np.ndarray, iC: np.ndarray, mask: np.ndarray,
                             n_nearest: int | None = None):
    """getMeUtU: which templates share a channel, given their best channels ``iW`` (Nfilt,).

    Args:
        iC: (NchanNear, Nchan) 0-based neighbours of each channel; mask: (NchanNear, Nchan).
    Returns:
        UtU: (Nfilt, Nfilt) bool; maskU: (NchanNear, Nfilt) float32 masks of the best channels;
        iList: (n_nearest, Nfilt) 0-based templates sharing the most channels (stable order), or
        None when ``n_nearest`` is None.
    """
    n_chan, n_filt = iC.shape[1], iW.size
    u = np.zeros((n_chan, n_filt), np.float32)
    u[iC[:, iW], np.arange(n_filt)[None, :]] = 1
    utu = (u.T @ u) > 0
    mask_u = mask[:, iW]
    ilist = None
    if n_nearest is not None:
        ilist = np.argsort(-utu.astype(np.int8), axis=0, kind="stable")[:n_nearest]
    return utu, mask_u, ilist


def template_similarity(W: np.ndarray, U: np.ndarray, *, n_nearest: int | None = None):
    """getMeWtW2: zero-lag similarity sum_ij (W_i^T W_j) * (U_i^T U_j), (Nfilt, Nfilt) float32,
    and optionally the (n_nearest, Nfilt) 0-based most similar templates (indices wrap around
    when there are fewer than n_nearest templates, as in the original)."""
    n_filt, n_rank = W.shape[1], W.shape[2]
    wtw = np.zeros((n_filt, n_filt), np.float32)
    for i in range(n_rank):
        for j in range(n_rank):
            wtw += (W[:, :, i].T @ W[:, :, j]) * (U[:, :, i].T @ U[:, :, j])
    if n_nearest is None:
        return wtw, None
    order = np.argsort(-wtw, axis=0, kind="stable")
    return wtw, order[np.arange(n_nearest) % n_filt]


def triage_templates(*, W, U, dWU, mu, nsp, ndrop, min_fr: float, NT: int, fs: float):
    """triageTemplates2: drop templates whose spike-count estimate is below minFR*NT/fs, then
    drop, of each pair with similarity > 0.9 and amplitudes within 4*sqrt(10), the one with fewer
    spikes. Returns (W, U, dWU, mu, nsp, ndrop) with ndrop (2,) running averages of drop counts."""
    ndrop = np.asarray(ndrop, np.float64).copy()
    keep = ~(nsp < min_fr * NT / fs)
    W, U, dWU, mu, nsp = W[:, keep], U[:, keep], dWU[:, :, keep], mu[keep], nsp[keep]
    ndrop[0] = 0.9 * ndrop[0] + 0.1 * (~keep).sum()
    cc, _ = template_similarity(W, U)
    np.fill_diagonal(cc, 0)
    with np.errstate(divide="ignore"):
        r0 = 2 * (2 * _TRIAGE_SD) / np.abs(mu[:, None] - mu[None, :])
    pair = (cc > _TRIAGE_SIMILARITY) & (r0 > 1) & ((nsp[:, None] - nsp[None, :]) < 0)
    keep = ~pair.any(axis=1)
    ndrop[1] = 0.9 * ndrop[1] + 0.1 * (~keep).sum()
    return W[:, keep], U[:, keep], dWU[:, :, keep], mu[keep], nsp[keep], ndrop


def memorize_w(*, W, dWU, U, mu) -> dict:
    """memorizeW: the template state, plus Wraw (Nchan, nt0, Nfilt) = mu * U_n W_n^T per template."""
    wraw = np.einsum("n,cnr,tnr->ctn", mu, U, W)
    return {"dWU": dWU, "W": W, "U": U, "mu": mu, "Wraw": wraw}


def template_neighbours(W: np.ndarray, U: np.ndarray, n_nearest: int, *,
                        backend: Backend = CPU):
    """getMeWtW: (WtW (Nfilt, Nfilt, 2*nt0-1) cross-correlations over lags, iList (n_nearest,
    Nfilt) 0-based most similar templates by their best lag, indices wrapping as the original).
    The kernel accumulates on ``backend``; the result comes back as numpy."""
    W32, U32 = W.astype(np.float32), U.astype(np.float32)
    wtw = None
    for i in range(_NRANK):
        for j in range(_NRANK):
            utu = np.asfortranarray(U32[:, :, i].T @ U32[:, :, j])
            wtw = template_cross_correlations(W1=backend.put(np.asfortranarray(W32[:, :, i])),
                                              W2=backend.put(np.asfortranarray(W32[:, :, j])),
                                              UtU=backend.put(utu), out=wtw,
                                              accumulate=wtw is not None)
    wtw = backend.fetch(wtw)
    cc = wtw.max(axis=2)
    order = np.argsort(-cc, axis=0, kind="stable")
    return wtw, order[np.arange(n_nearest) % cc.shape[0]]
