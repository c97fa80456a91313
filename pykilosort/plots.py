"""Figures written next to the results (matplotlib is optional: without it, no figure)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["plot_reorder", "plot_drift"]

_MAX_POINTS = 200_000  # spikes drawn in a drift raster (a seeded subset beyond)


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


def plot_drift(ctx, *, path) -> Path | None:
    """Spike depth vs time coloured by amplitude, as detected (with the estimated drift of each
    block drawn through its centre) and after the correction; the generic-template detections
    of the datashift step. Returns the PNG's path, or None without matplotlib."""
    from .drift import batch_centre_times, corrected_depths

    plt = _pyplot()
    if plt is None:
        return None
    it, p, d = ctx.intermediate, ctx.params, ctx.derived
    st0, dshift, yblk = np.asarray(it.st0), np.asarray(it.dshift), np.asarray(it.yblk)
    group = np.asarray(it.get("dshift_group", np.zeros(yblk.size, int)))
    if st0.shape[0] > _MAX_POINTS:
        st0 = st0[np.sort(np.random.default_rng(0).choice(st0.shape[0], _MAX_POINTS, False))]
    t = (d.tstart + st0[:, 0]) / p.fs
    batches = st0[:, 4].astype(int)
    after = corrected_depths(depths=st0[:, 1], batches=batches, dshift=dshift, yblk=yblk,
                             block_group=group, groups_of_spikes=st0[:, 6].astype(int))
    tb = batch_centre_times(ctx, dshift.shape[0])
    fig, ax = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
    order = np.argsort(st0[:, 2])  # large spikes drawn last, on top
    for a, y, title in ((ax[0], st0[:, 1], "detected"), (ax[1], after, "drift-corrected")):
        a.scatter(t[order], y[order], c=np.log10(st0[order, 2]), s=0.5, cmap="magma_r",
                  vmin=np.log10(p.genericSpkTh), vmax=2, rasterized=True)
        a.set(title=f"spike depth, {title}", xlabel="time (s)")
    for j in range(yblk.size):  # a unit at depth y appears at y - drift before correction
        ax[0].plot(tb, yblk[j] - dshift[:, j], color="tab:cyan", lw=1)
    ax[0].set_ylabel("depth (um)")
    fig.suptitle(f"datashift: nblocks={p.nblocks}, drift range "
                 f"{dshift.min():.1f} to {dshift.max():.1f} um (cyan: estimate per block)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
