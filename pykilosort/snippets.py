"""Spike snippets from the whitened proc file: PCs of 1-D waveforms and template prototypes.

Ports of extractPCfromSnippets.m, extractTemplatesfromSnippets.m and get_SpikeSample.m
(Kilosort2 v2.0). Batches are read through a callable ``read_batch(ibatch) -> (NT, Nchan) int16``
(0-based ``ibatch``), so the functions work on our proc file or on any batch source.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import DataQualityError
from .peaks import isolated_peaks_new

__all__ = ["get_spike_sample", "extract_pc_from_snippets", "extract_templates_from_snippets",
           "eig_components"]

_MAX_SNIPPETS = 100_000  # extractTemplatesfromSnippets stops reading batches beyond this


def get_spike_sample(data: np.ndarray, row: np.ndarray, col: np.ndarray, *, nt0: int,
                     nt0min: int) -> np.ndarray:
    """(nt0, n_spikes) 1-D clips of ``data`` (NT, Nchan) on channel ``col`` around sample ``row``
    (0-based), the peak at clip index nt0min - 1 (MATLAB's 1-based nt0min)."""
    offsets = np.arange(nt0) - nt0min + 1
    return data[row[None, :] + offsets[:, None], col[None, :]]


def _batch_snippets(read_batch, ibatch: int, *, scaleproc, spk_th, nt0, nt0min, loc_range,
                    long_range) -> np.ndarray:
    data = read_batch(ibatch).astype(np.float32) / np.float32(scaleproc)
    row, col, _ = isolated_peaks_new(data, spk_th=spk_th, nt0=nt0, loc_range=loc_range,
                                     long_range=long_range)
    return get_spike_sample(data, row, col, nt0=nt0, nt0min=nt0min)


def eig_components(x: np.ndarray, n: int) -> np.ndarray:
    """First ``n`` left singular vectors of ``x`` (rows <= columns) as svdecon.m computes them:
    eigenvectors of x x^T sorted by decreasing |eigenvalue|.

    Signs are arbitrary but decide results downstream (sortBatches2 starts its embedding from the
    first vector, so a flip reverses the batch order). Like Octave's eig, we call LAPACK's
    dsyev on the upper triangle: on double matrices this gave Octave's signs for every
    eigenvector we compared; numpy's eigh (lower triangle, dsyevd) flips about half of them.
    (Octave's single-precision eig agrees with ssyev only ~90% of the time, so we stay in double.)
    """
    import scipy.linalg

    d, u = scipy.linalg.eigh(x @ x.T, lower=False, driver="ev")
    order = np.argsort(-np.abs(d), kind="stable")
    return u[:, order[:n]]


def extract_pc_from_snippets(read_batch: Callable[[int], np.ndarray], *, Nbatch: int, nt0: int,
                             nt0min: int, scaleproc: float, spk_th: float, loc_range=(5, 4),
                             long_range=(30, 6), n_pcs: int = 3) -> np.ndarray:
    """(nt0, n_pcs) float64 PCs of isolated spikes' 1-D waveforms from every 100th batch.

    The first PC's sign makes its value at sample 21 (1-based, hard-coded in the original)
    negative-going, as the original does.
    """
    cc = np.zeros((nt0, nt0))
    for ibatch in range(0, Nbatch, 100):
        c = _batch_snippets(read_batch, ibatch, scaleproc=scaleproc, spk_th=spk_th, nt0=nt0,
                            nt0min=nt0min, loc_range=loc_range, long_range=long_range)
        cc += (c @ c.T).astype(np.float64) / 1e3  # float32 product, float64 sum, as in MATLAB
    w = eig_components(cc, n_pcs)
    w[:, 0] = -w[:, 0] * np.sign(w[20, 0])
    return w


def extract_templates_from_snippets(read_batch: Callable[[int], np.ndarray], *, Nbatch: int,
                                    nskip: int, nt0: int, nt0min: int, scaleproc: float,
                                    spk_th: float, stream, loc_range=(5, 4), long_range=(30, 6),
                                    n_pcs: int = 3, spread_init: bool = False
                                    ) -> tuple[np.ndarray, np.ndarray]:
    """(wTEMP, wPCA), both (nt0, n_pcs) float32: 10 rounds of spherical k-means on 1-D waveforms
    from every nskip-th batch, started from ``n_pcs`` random waveforms (``stream.randperm``; with
    ``spread_init``, Kilosort 2.5's evenly spread ``round(linspace(1, n, n_pcs))``, and no random
    numbers), and the waveforms' first PCs (first PC negative at nt0min)."""
    chunks, k = [], 0
    for ibatch in range(0, Nbatch, nskip):
        c = _batch_snippets(read_batch, ibatch, scaleproc=scaleproc, spk_th=spk_th, nt0=nt0,
                            nt0min=nt0min, loc_range=loc_range, long_range=long_range)
        chunks.append(c)
        k += c.shape[1]
        if k > _MAX_SNIPPETS:
            break
    dd = np.concatenate(chunks, axis=1) if chunks else np.zeros((nt0, 0), np.float32)
    if dd.shape[1] < n_pcs:
        raise DataQualityError(
            f"only {dd.shape[1]} isolated spikes found in the proc file; at least {n_pcs} are "
            "needed to initialise the templates: is the recording mostly noise, or spkTh too high? "
            "(stop_after='reorder' runs everything before template learning)")
    if spread_init:  # MATLAB round: half away from zero; 1-based
        first = np.floor(np.linspace(1, dd.shape[1], n_pcs) + 0.5).astype(np.int64) - 1
    else:
        first = stream.randperm(dd.shape[1], n_pcs)
    w_temp = _spherical_kmeans(dd, dd[:, first])
    # float64: Octave's single-precision eig (ssyev) signs cannot be reproduced reliably
    w_pca = eig_components(dd.astype(np.float64), n_pcs).astype(np.float32)
    w_pca[:, 0] = -w_pca[:, 0] * np.sign(w_pca[nt0min - 1, 0])
    return w_temp, w_pca


def _spherical_kmeans(dd: np.ndarray, init: np.ndarray, n_iter: int = 10) -> np.ndarray:
    """Assign each waveform to its most correlated prototype; prototypes become the amplitude-
    weighted sums of their members, unit-normalised (float32, like the original on the GPU)."""
    w = init / np.sqrt((init ** 2).sum(axis=0))
    for _ in range(n_iter):
        cc = w.T @ dd
        cc = np.where(np.isnan(cc), -np.inf, cc)  # MATLAB's max skips NaN (an emptied cluster)
        imax = cc.argmax(axis=0)
        amax = cc[imax, np.arange(dd.shape[1])]
        w = np.stack([dd[:, imax == j] @ amax[imax == j] for j in range(w.shape[1])], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = (w / np.sqrt((w ** 2).sum(axis=0))).astype(np.float32)
    return w
