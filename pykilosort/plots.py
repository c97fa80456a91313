"""Figures written next to the results (matplotlib is optional: without it, no figure)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["plot_reorder"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no figures (pip install matplotlib)")
        return None
    return plt


def plot_reorder(*, ccb: np.ndarray, ccbsort: np.ndarray, xs: np.ndarray, iorig: np.ndarray,
                 path) -> Path | None:
    """The batch dissimilarity before/after sorting and the batch embedding (a drift trace), as
    clusterSingleBatches.m draws them. Returns the PNG's path, or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(2, 2, figsize=(9, 7))
    for a, m, title in ((ax[0, 0], ccb, "before sorting"), (ax[0, 1], ccbsort, "after sorting")):
        a.imshow(m, vmin=-5, vmax=5, cmap="viridis", interpolation="nearest")
        a.set(title=f"batch dissimilarity, {title}", xlabel="batch", ylabel="batch")
    ax[1, 0].plot(xs)
    ax[1, 0].set(title="drift trace, time order", xlabel="batch", ylabel="manifold position")
    ax[1, 1].plot(np.asarray(xs)[np.asarray(iorig)])
    ax[1, 1].set(title="drift trace, sorted", xlabel="sorted batch", ylabel="manifold position")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
