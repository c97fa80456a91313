"""Cross-correlograms and refractoriness scores: ccg.m of Kilosort2 (v2.0 = v2.5.2).

Merges (find_merges), splits (splitAllClusters) and the amplitude cutoff (set_cutoff) all decide
with the same two numbers computed from a correlogram of 1 ms bins over +-0.5 s:

- Q: the least normalised count in the central bins (+-1 .. +-10 ms) relative to the shoulders
  (or to the rate expected from two independent Poisson trains); small Q = refractory;
- R: the probability, under a Gaussian approximation of a Poisson count with the shoulders' rate,
  of seeing as few coincidences as observed; small R = significantly refractory.

Spike times are in seconds, float64, and the arithmetic follows ccg.m operation by operation
(same rounding of lags, same order of products), so scores agree with MATLAB/Octave to the last
bit except for erf's implementation. MATLAB's min/max skip NaN (:func:`nanmin`): a score that
cannot be computed (too few spikes) is NaN, and comparisons with NaN are False.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

__all__ = ["CCG", "ccg", "ccg_counts", "refractory_scores", "nanmin", "nanmax"]

N_BINS = 500      # lags of +-nbins bins
BIN_S = 1 / 1000  # 1 ms bins (find_merges, set_cutoff and splitAllClusters all use dt = 1/1000)
_N_CENTRAL = 10   # central windows of +-1 .. +-10 bins


class CCG(NamedTuple):
    """``[K, Qi, Q00, Q01, Ri] = ccg(st1, st2, nbins, tbin)``, plus the two scores derived from it."""
    K: np.ndarray    # (2*nbins+1,) counts; K[nbins] is lag 0
    Qi: np.ndarray   # (10,) normalised counts in the central +-i bins (lag 0 excluded)
    Q00: float       # far shoulders over the Poisson expectation
    Q01: float       # near shoulders (the larger of the two sides) over the Poisson expectation
    Ri: np.ndarray   # (10,) probability of so few central counts given the shoulders' rate

    @property
    def Q(self) -> float:
        """min(Qi / max(Q00, Q01)), NaN-skipping like MATLAB."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return nanmin(self.Qi / nanmax(np.array([self.Q00, self.Q01])))

    @property
    def R(self) -> float:
        """min(Ri), NaN-skipping like MATLAB."""
        return nanmin(self.Ri)


def nanmin(x: np.ndarray) -> float:
    """MATLAB min(x): the smallest non-NaN element; NaN if there is none (or x is empty)."""
    x = np.asarray(x, np.float64)
    ok = x[~np.isnan(x)]
    return float(ok.min()) if ok.size else math.nan


def nanmax(x: np.ndarray) -> float:
    """MATLAB max(x): the largest non-NaN element; NaN if there is none (or x is empty)."""
    x = np.asarray(x, np.float64)
    ok = x[~np.isnan(x)]
    return float(ok.max()) if ok.size else math.nan


@numba.njit(cache=True)
def _round_half_away(x: float) -> float:
    """MATLAB round(): halves away from zero (exact: a - floor(a) is exact in floating point)."""
    a = abs(x)
    r = math.floor(a)
    if a - r >= 0.5:
        r += 1.0
    return r if x >= 0 else -r


@numba.njit(cache=True)
def _counts(st1, st2, nbins, tbin):
    """The two-pointer traversal of ccg.m over sorted trains; returns K (2*nbins+1,) float64."""
    dt = nbins * tbin
    K = np.zeros(2 * nbins + 1)
    n1, n2 = st1.size, st2.size
    ilow = 0
    ihigh = 0
    j = 0
    while j < n2:
        while ihigh < n1 and st1[ihigh] < st2[j] + dt:
            ihigh += 1
        while ilow < n1 and st1[ilow] <= st2[j] - dt:
            ilow += 1
        if ilow >= n1:
            break
        if st1[ilow] > st2[j] + dt:
            j += 1
            continue
        for k in range(ilow, ihigh):
            ibin = int(_round_half_away((st2[j] - st1[k]) / tbin))
            K[ibin + nbins] += 1.0
        j += 1
    return K


def ccg_counts(st1, st2, *, nbins: int = N_BINS, tbin: float = BIN_S) -> np.ndarray:
    """(2*nbins+1,) histogram of st2 - st1 over lags within +-nbins*tbin (times in seconds)."""
    a = np.sort(np.asarray(st1, np.float64).ravel())
    b = np.sort(np.asarray(st2, np.float64).ravel())
    return _counts(a, b, int(nbins), float(tbin))


def refractory_scores(K: np.ndarray, *, n1: int, n2: int, T: float, nbins: int = N_BINS,
                      tbin: float = BIN_S):
    """(Qi (10,), Q00, Q01, Ri (10,)) from counts K as ccg.m computes them.

    ``T`` is the time spanned by both trains (s). Index ranges are ccg.m's 1-based ones, shifted.
    """
    K = np.asarray(K, np.float64).copy()
    r1 = np.r_[1:nbins // 2, 3 * nbins // 2:2 * nbins]   # [2:nbins/2, 3/2*nbins+1:2*nbins]
    r2 = np.arange(nbins - 50, nbins - 10)                  # nbins+1-50 : nbins-10
    r3 = np.arange(nbins + 11, nbins + 50)                  # nbins+12 : nbins+50
    with np.errstate(divide="ignore", invalid="ignore"):
        # numel(r)*tbin*numel(st1)*numel(st2)/T, evaluated left to right as in MATLAB
        def rate(count):
            return ((np.float64(count) * tbin) * n1) * n2 / np.float64(T)

        s1, s2, s3 = K[r1].sum(), K[r2].sum(), K[r3].sum()
        q00 = s1 / rate(r1.size)
        q01 = nanmax(np.array([s2 / rate(r2.size), s3 / rate(r3.size)]))
        r00 = nanmax(np.array([nanmax(np.array([s2 / r2.size, s3 / r3.size])), s1 / r1.size]))
        K[nbins] = 0  # the centre (a spike with itself, or double counts) is not evidence
        qi, ri = np.empty(_N_CENTRAL), np.empty(_N_CENTRAL)
        for i in range(1, _N_CENTRAL + 1):
            total = K[nbins - i: nbins + i + 1].sum()
            qi[i - 1] = total / rate(2 * i)
            n, lam = total / 2, r00 * i
            ri[i - 1] = 0.5 * (1 + math.erf((n - lam) / math.sqrt(2 * lam))) if lam > 0 else (
                _erf_limit(n - lam))
    return qi, float(q00), float(q01), ri


def _erf_limit(num: float) -> float:
    """1/2*(1 + erf(num/sqrt(0))) as IEEE arithmetic gives it: num/0 is +-inf, or NaN for 0/0."""
    if num == 0 or math.isnan(num):
        return math.nan
    return 1.0 if num > 0 else 0.0


def ccg(st1, st2, *, nbins: int = N_BINS, tbin: float = BIN_S) -> CCG:
    """ccg.m: the cross-correlogram of spike trains ``st1``, ``st2`` (seconds) and its scores.

    An empty train gives NaN scores (0/0), as in MATLAB; both empty is an error there and here.
    """
    a = np.asarray(st1, np.float64).ravel()
    b = np.asarray(st2, np.float64).ravel()
    if a.size + b.size == 0:
        raise ValueError("ccg needs at least one spike")
    both = np.concatenate([a, b])
    T = float(both.max() - both.min())
    K = ccg_counts(a, b, nbins=nbins, tbin=tbin)
    qi, q00, q01, ri = refractory_scores(K, n1=a.size, n2=b.size, T=T, nbins=nbins, tbin=tbin)
    return CCG(K, qi, q00, q01, ri)
