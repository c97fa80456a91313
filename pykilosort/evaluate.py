"""Scoring a sorting against ground truth (the demo's table; the benchmarks use SpikeInterface).

Definitions follow spikeinterface.comparison: a sorted spike matches a true one within
``delta_ms``; units are paired one to one by the Hungarian method on the agreement
matches / (n_true + n_sorted - matches), and a pair's accuracy is that agreement, i.e.
tp / (tp + fn + fp).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["count_matches", "compare_to_ground_truth", "Comparison"]


@numba.njit(cache=True)
def count_matches(a: np.ndarray, b: np.ndarray, delta: int) -> int:
    """Spikes of sorted train ``a`` and ``b`` paired within ``delta`` samples, each spike used
    at most once (a greedy sweep in time order, as for two trains of one neuron)."""
    i = j = n = 0
    while i < a.size and j < b.size:
        d = a[i] - b[j]
        if abs(d) <= delta:
            n, i, j = n + 1, i + 1, j + 1
        elif d < 0:
            i += 1
        else:
            j += 1
    return n


@dataclass(frozen=True)
class Comparison:
    agreement: np.ndarray   # (n_units, n_clusters) matches / (n_true + n_sorted - matches)
    matches: np.ndarray     # (n_units, n_clusters) matched spike counts
    n_true: np.ndarray      # (n_units,)
    n_sorted: np.ndarray    # (n_clusters,)
    best: np.ndarray        # (n_units,) cluster paired with each unit, -1 if none

    @property
    def accuracy(self) -> np.ndarray:
        """(n_units,) accuracy of each unit's paired cluster (0 when unpaired)."""
        rows = np.arange(self.best.size)
        return np.where(self.best >= 0, self.agreement[rows, np.maximum(self.best, 0)], 0.0)

    def recall(self) -> np.ndarray:
        rows = np.arange(self.best.size)
        m = self.matches[rows, np.maximum(self.best, 0)]
        return np.where(self.best >= 0, m / np.maximum(self.n_true, 1), 0.0)

    def precision(self) -> np.ndarray:
        rows = np.arange(self.best.size)
        m = self.matches[rows, np.maximum(self.best, 0)]
        n = self.n_sorted[np.maximum(self.best, 0)]
        return np.where(self.best >= 0, m / np.maximum(n, 1), 0.0)

    def redundant_clusters(self, min_agreement: float = 0.2) -> np.ndarray:
        """Clusters not paired with a unit but agreeing >= min_agreement with one (duplicates)."""
        unpaired = np.setdiff1d(np.arange(self.n_sorted.size), self.best[self.best >= 0])
        return unpaired[self.agreement[:, unpaired].max(axis=0, initial=0) >= min_agreement]

    def false_positive_clusters(self, min_agreement: float = 0.2) -> np.ndarray:
        """Clusters matching no unit (agreement < min_agreement with all), with spikes."""
        unpaired = np.setdiff1d(np.arange(self.n_sorted.size), self.best[self.best >= 0])
        low = self.agreement[:, unpaired].max(axis=0, initial=0) < min_agreement
        return unpaired[low & (self.n_sorted[unpaired] > 0)]


def compare_to_ground_truth(*, true_times, true_units, times, clusters, fs: float,
                            delta_ms: float = 0.4, min_agreement: float = 0.1) -> Comparison:
    """Pair ground-truth units with sorted clusters (ids 0..max) and score every pair."""
    delta = int(round(delta_ms * fs / 1000))
    true_times, true_units = np.asarray(true_times), np.asarray(true_units)
    times, clusters = np.asarray(times), np.asarray(clusters)
    n_units = int(true_units.max()) + 1 if true_units.size else 0
    n_clusters = int(clusters.max()) + 1 if clusters.size else 0
    trains_true = [np.sort(true_times[true_units == u]) for u in range(n_units)]
    trains = [np.sort(times[clusters == c]) for c in range(n_clusters)]
    n_true = np.array([t.size for t in trains_true])
    n_sorted = np.array([t.size for t in trains])
    matches = np.zeros((n_units, n_clusters), np.int64)
    for u, tu in enumerate(trains_true):
        for c, tc in enumerate(trains):
            matches[u, c] = count_matches(tu, tc, delta) if tc.size and tu.size else 0
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = matches / (n_true[:, None] + n_sorted[None, :] - matches)
    agreement = np.nan_to_num(agreement)
    best = np.full(n_units, -1)
    if n_units and n_clusters:
        rows, cols = linear_sum_assignment(-agreement)
        ok = agreement[rows, cols] >= min_agreement
        best[rows[ok]] = cols[ok]
    return Comparison(agreement=agreement, matches=matches, n_true=n_true, n_sorted=n_sorted,
                      best=best)
