"""Removal of double-counted spikes: remove_ks2_duplicate_spikes.m (Kilosort2 v2.0, A. Bondy 2020).

Template matching can explain one spike with two templates. Of every pair of spikes closer than
``overlap_s`` in time whose templates' primary channels lie closer than ``separation_um``, the
spike of the template with the smaller (unwhitened, peak-to-peak) amplitude is removed. Optional,
off by default, as in the original's master script (``remove_duplicate_spikes=True`` runs it,
before the merges).
"""
from __future__ import annotations

import logging

import numpy as np

from .neighbours import channel_distances

logger = logging.getLogger(__name__)

__all__ = ["remove_duplicate_spikes", "template_amplitudes", "unwhitened_templates", "unwhiten"]


def unwhiten(templates: np.ndarray, *, Wrot: np.ndarray, scaleproc: float) -> np.ndarray:
    """(Nfilt, nt, Nchan) templates times the inverse of the whitening matrix Wrot / scaleproc
    (float64): the templates in the raw data's units, as rezToPhy and this module compute them."""
    winv = np.linalg.inv(np.asarray(Wrot, np.float64) / scaleproc)
    return np.asarray(templates, np.float64) @ winv


def unwhitened_templates(*, W: np.ndarray, U: np.ndarray, Wrot: np.ndarray,
                         scaleproc: float) -> np.ndarray:
    """(Nfilt, nt, Nchan) templates U_n W_n^T (float32, rezToPhy's layout), unwhitened
    (W: (nt, Nfilt, 3), U: (Nchan, Nfilt, 3))."""
    temps = np.einsum("cnr,tnr->ntc", np.asarray(U, np.float32), np.asarray(W, np.float32))
    return unwhiten(temps, Wrot=Wrot, scaleproc=scaleproc)


def template_amplitudes(unwhitened: np.ndarray):
    """(amplitude (Nfilt,), primary channel (Nfilt,) 0-based): the largest peak-to-peak over
    channels of each unwhitened template, and where it is (first channel on ties)."""
    ptp = unwhitened.max(axis=1) - unwhitened.min(axis=1)          # (Nfilt, Nchan)
    return ptp.max(axis=1), ptp.argmax(axis=1)


def remove_duplicate_spikes(*, times: np.ndarray, templates: np.ndarray, W, U, Wrot,
                            scaleproc: float, xc, yc, fs: float, overlap_s: float = 5e-4,
                            separation_um: float = 100.0) -> np.ndarray:
    """remove_ks2_duplicate_spikes(rez): (n,) bool, True for the spikes to remove.

    times: (n,) samples; templates: (n,) 0-based; W, U, Wrot: rez fields; xc, yc: (Nchan,).
    Pairs are found in time order (stable sort of times), first between neighbours in that order,
    then between spikes 2, 3, ... apart, until no pair lies within the overlap. Of a pair, the
    later spike is removed when the earlier one's template is at least as large.
    """
    times = np.asarray(times, np.int64)
    templates = np.asarray(templates, np.int64)
    amp, primary = template_amplitudes(unwhitened_templates(W=W, U=U, Wrot=Wrot,
                                                            scaleproc=scaleproc))
    order = np.argsort(times, kind="stable")
    t, tmpl = times[order], templates[order]
    chan = primary[tmpl]
    dist = channel_distances(xc, yc)
    overlap = int(np.floor(overlap_s * fs + 0.5))  # MATLAB round, positive
    remove = np.zeros(times.size, bool)
    gap = 0
    while True:
        gap += 1
        if gap >= t.size:
            break
        close = (t[gap:] - t[:-gap]) < overlap
        if not close.any():
            break
        first = np.flatnonzero(close & (dist[chan[:-gap], chan[gap:]] < separation_um))
        if first.size:
            first_is_bigger = amp[tmpl[first + gap]] - amp[tmpl[first]] <= 0
            drop = np.where(first_is_bigger, first + gap, first)
            remove[order[drop]] = True
    logger.info("duplicates: %d of %d spikes removed as double-counted", remove.sum(), times.size)
    return remove
