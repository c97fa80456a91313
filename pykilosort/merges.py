"""Template merges vetoed by refractory-period violations: find_merges.m of Kilosort2 (v2.0 = v2.5.2).

Clusters are visited in ascending order of spike count. Each is compared with the larger clusters
whose template similarity (simScore) is at least 0.5, most similar first; it is merged into the
first one whose cross-correlogram with it is refractory (Q < 0.2 and R < 0.05: the two trains
never fire within a millisecond or two of each other, as one neuron would not).
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from .correlograms import ccg
from .logs import progress

logger = logging.getLogger(__name__)

__all__ = ["find_merges", "MergeResult", "cluster_members"]

MIN_SIMILARITY = 0.5   # pairs below this template similarity are never merged
MAX_Q, MAX_R = 0.2, 0.05


class MergeResult(NamedTuple):
    templates: np.ndarray  # (n_spikes,) int32 0-based cluster of each spike after merges
    merges: np.ndarray     # (n_merges, 2) int32 (merged cluster, cluster it joined), in order


def cluster_members(labels: np.ndarray, n_clusters: int) -> list[np.ndarray]:
    """Row indices of each cluster's spikes, ascending (MATLAB find(st3(:,2)==k))."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n_clusters)]


def find_merges(*, times: np.ndarray, templates: np.ndarray, sim: np.ndarray,
                fs: float) -> MergeResult:
    """find_merges(rez, 1).

    Args:
        times: (n_spikes,) spike samples (st3(:,1)); templates: (n_spikes,) 0-based clusters.
        sim: (Nk, Nk) template similarity (rez.simScore); its diagonal is ignored.
        fs: sampling rate (Hz): times are compared in seconds, as in the original.
    """
    xsim = np.array(sim, np.float32, copy=True)
    np.fill_diagonal(xsim, 0)
    nk = xsim.shape[0]
    labels = np.asarray(templates, np.int32).copy()
    seconds = np.asarray(times, np.float64) / fs
    members = cluster_members(labels, nk)
    nspk = np.array([m.size for m in members], np.float64)
    isort = np.argsort(nspk, kind="stable")  # ascending spike count; MATLAB sort is stable
    merges = []
    for j in progress(isort, desc="merges", unit="cluster"):
        s1 = seconds[members[j]]
        # candidates: larger clusters, most similar first (MATLAB's descending sort is stable)
        cc = xsim[j] * (nspk > s1.size)
        ix = np.argsort(-cc, kind="stable")
        below = np.flatnonzero(cc[ix] < MIN_SIMILARITY)
        n_candidates = below[0] if below.size else 0  # find(ccsort<.5, 1) - 1
        for i in ix[:n_candidates]:
            score = ccg(s1, seconds[members[i]]) if members[i].size + s1.size else None
            if score is not None and score.Q < MAX_Q and score.R < MAX_R:
                labels[members[j]] = i
                members[i] = np.sort(np.concatenate([members[i], members[j]]))
                members[j] = members[j][:0]
                nspk[i] += nspk[j]  # the original leaves nspk[j] as it was, and so do we
                merges.append((j, i))
                logger.debug("merged cluster %d into %d", j, i)
                break
    logger.info("merges: %d pairs merged", len(merges))
    return MergeResult(labels, np.array(merges, np.int32).reshape(-1, 2))
