"""Kilosort2 batch reordering (clusterSingleBatches.m, sortBatches2.m)."""
from __future__ import annotations

import numpy as np

__all__ = ["sort_batches", "initialize_wdata"]


def sort_batches(ccb0: np.ndarray, *, n_iter: int = 200, eta: float = 1.0):
    """Embed batches on a line so that log(1 + distance^2) matches their dissimilarity ``ccb0``
    (nBatches, nBatches), by gradient descent from the first singular vector (sortBatches2.m).

    Returns (ccb1, isort, xs): the reordered matrix ccb0[isort][:, isort], the 0-based order, and
    the (nBatches,) embedding positions.
    """
    ccb0 = np.asarray(ccb0, dtype=np.float64)
    d, u = np.linalg.eigh(ccb0 @ ccb0.T)  # svdecon: eigenvectors sorted by |eigenvalue|
    u1 = u[:, np.argsort(-np.abs(d), kind="stable")[0]]
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
