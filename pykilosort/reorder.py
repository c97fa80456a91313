"""Kilosort2 batch reordering (clusterSingleBatches.m, sortBatches2.m)."""
from __future__ import annotations

import numpy as np

__all__ = ["sort_batches"]


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
