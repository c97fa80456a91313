"""Per-unit amplitude cutoff and good/mua labels: set_cutoff.m (Kilosort2 v2.0, v2.5.2) and
get_good_units.m (v2.5.2).

set_cutoff lowers each unit's threshold on vexp (st3(:,4), the spike's explained variance) from
Th(1) in steps of 0.5 while its autocorrelogram stays refractory; spikes below the last good
threshold are discarded. A unit refractory at some threshold is 'good', else 'mua'.
get_good_units (KS2.5) also labels 'mua' the units whose waveform spreads > 100 um on average.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from .correlograms import ccg
from .logs import progress
from .merges import cluster_members

logger = logging.getLogger(__name__)

__all__ = ["set_cutoff", "CutoffResult", "get_good_units"]

_STEP = 0.5             # threshold decrement
_START_CONTAMINATION = 0.1
_MAX_R = 0.05
_MAX_SPREAD_UM = 100.0  # get_good_units


class CutoffResult(NamedTuple):
    keep: np.ndarray             # (n_spikes,) bool: spikes above their unit's threshold
    good: np.ndarray             # (Nk,) bool: rez.good
    est_contam_rate: np.ndarray  # (Nk,) float64: Q at the final threshold (1 where unknown)
    Ths: np.ndarray              # (Nk,) float64: final threshold (0 for units without spikes)


def _unit_threshold(ss: np.ndarray, vexp: np.ndarray, th: tuple, *, legacy: bool):
    """(good, final threshold) of one unit's spikes ``ss`` (s) with explained variances vexp.

    The threshold descends from th[0] in steps of 0.5 while the autocorrelogram of the spikes
    above it stays clean (Q <= fcontamination); it is 'good' where it is also significantly
    refractory (R <= 0.05). The original stops at the first threshold that is not both
    (``legacy``): a clean unit with too few spikes above th[0] for R to be significant keeps
    only its spikes above th[0] + 0.5, and a score that cannot be computed (NaN) passes both
    tests, labelling a unit good on no evidence. Otherwise (the default) only contamination
    stops the descent, and NaN scores are no evidence of refractoriness.
    """
    thr, fcontamination, good = th[0], _START_CONTAMINATION, False
    while thr >= th[1]:
        st = ss[vexp > thr]
        if st.size == 0:
            thr -= _STEP
            continue
        score = ccg(st, st)
        Q, R = score.Q, score.R
        if legacy:
            if Q > fcontamination or R > _MAX_R:
                break
        else:
            if Q > fcontamination:
                break
            if not (R <= _MAX_R and Q <= fcontamination):  # inconclusive (few spikes, NaN)
                thr -= _STEP
                continue
        if thr == th[0] and Q < 0.05:
            # a unit that starts well isolated must stay well isolated
            fcontamination = min(0.05, max(0.01, Q * 2))
        good = True
        thr -= _STEP
    return good, thr + _STEP


def set_cutoff(*, times: np.ndarray, templates: np.ndarray, vexp: np.ndarray, n_templates: int,
               fs: float, Th: tuple, legacy: bool = False) -> CutoffResult:
    """set_cutoff(rez).

    Args:
        times, templates, vexp: (n,) st3 columns 1, 2 (0-based) and 4.
        n_templates: Nk = numel(rez.mu).
        Th: ops.Th (thresholds are tried from Th[0] down to Th[1]).
        legacy: the original's descent (see :func:`_unit_threshold`; README 'Legacy quirks').
    """
    labels = np.asarray(templates)
    seconds = np.asarray(times, np.float64) / fs
    vexp = np.asarray(vexp, np.float64)
    keep = np.ones(labels.size, bool)
    good = np.zeros(n_templates, bool)
    contam = np.ones(n_templates)
    ths = np.zeros(n_templates)
    members = cluster_members(labels, n_templates)
    for j, ix in enumerate(progress(members, desc="cutoff", unit="cluster")):
        if ix.size == 0:
            continue
        good[j], thr = _unit_threshold(seconds[ix], vexp[ix], tuple(Th), legacy=legacy)
        st = seconds[ix][vexp[ix] > thr]
        # v2.0 deletes the unit's entry when no spike is left (shifting later units' values and
        # crashing rezToPhy); v2.5.2 writes 1, as we do in both modes
        contam[j] = ccg(st, st).Q if st.size else 1.0
        ths[j] = thr
        keep[ix[vexp[ix] <= thr]] = False
    contam[np.isnan(contam)] = 1
    logger.info("cutoff: %d of %d units good; %d of %d spikes below their unit's threshold "
                "discarded", good.sum(), n_templates, (~keep).sum(), keep.size)
    return CutoffResult(keep=keep, good=good, est_contam_rate=contam, Ths=ths)


def get_good_units(*, dWU: np.ndarray, xc: np.ndarray, yc: np.ndarray,
                   good: np.ndarray) -> np.ndarray:
    """get_good_units(rez) of v2.5.2: good units whose waveform energy, over channels with at
    least a tenth of the peak's, lies on average within 100 um of its centre of mass.

    dWU: (nt0, Nchan, Nk); xc, yc: (Nchan,) channel positions (um); good: (Nk,) rez.good.
    Returns (Nk,) bool.
    """
    energy = np.sum(np.asarray(dWU, np.float64) ** 2, axis=0)          # (Nchan, Nk)
    energy = np.where(energy < energy.max(axis=0) / 10, 0, energy)
    xc, yc = np.asarray(xc, np.float64)[:, None], np.asarray(yc, np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = energy.mean(axis=0)
        xm, ym = (xc * energy).mean(axis=0) / norm, (yc * energy).mean(axis=0) / norm
        spread = (np.sqrt((xc - xm) ** 2 + (yc - ym) ** 2) * energy).mean(axis=0) / norm
    return np.asarray(good, bool) & (spread < _MAX_SPREAD_UM)
