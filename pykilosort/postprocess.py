"""Post-processing pipeline steps (main_kilosort.m after learnAndSolve8b), each checkpointed.

Kilosort2 (v2.0):   [duplicates] -> merges -> split_svd -> split_amplitude -> cutoff
Kilosort2.5:        [duplicates] -> merges -> split_svd -> cutoff -> good_units

Every step reads the latest ``st3`` (and the templates) from ``ctx.intermediate`` and writes new
ones, stored in its own subfolder of the context so that the earlier steps' checkpoints stay
valid. Spikes removed by ``duplicates`` and ``cutoff`` are tracked by ``spike_index``: row i of
the current st3 is row ``spike_index[i]`` of the st3 and features (cProj, cProjPC) of ``learn``,
so the large feature files are never copied.
"""
from __future__ import annotations

import logging

import numpy as np

from .cutoff import get_good_units, set_cutoff
from .duplicates import remove_duplicate_spikes
from .merges import find_merges
from .neighbours import get_closest_channels
from .splits import split_all_clusters
from .upsampling import get_kernels

logger = logging.getLogger(__name__)

__all__ = ["duplicates_step", "merges_step", "split_svd_step", "split_amplitude_step",
           "cutoff_step", "good_units_step", "spike_index"]

_NCHAN_NEAR_MAX = 32


def spike_index(ctx) -> np.ndarray:
    """(n,) int64 rows of learn's st3/cProj/cProjPC that the current st3 holds."""
    it = ctx.intermediate
    if "spike_index" in it:
        return np.asarray(it.spike_index)
    return np.arange(np.asarray(it.st3).size, dtype=np.int64)


def _relabel(st3: np.ndarray, templates: np.ndarray) -> np.ndarray:
    out = np.array(st3, copy=True)
    out["template"] = templates
    return out


def duplicates_step(ctx) -> dict:
    """remove_ks2_duplicate_spikes (only when remove_duplicate_spikes=True)."""
    p, it = ctx.params, ctx.intermediate
    st3 = np.asarray(it.st3)
    probe = ctx.probe_good
    remove = remove_duplicate_spikes(
        times=st3["time"], templates=st3["template"], W=np.asarray(it.W), U=np.asarray(it.U),
        Wrot=np.asarray(it.Wrot), scaleproc=p.scaleproc, xc=probe.xc, yc=probe.yc, fs=p.fs,
        overlap_s=p.duplicate_overlap_s, separation_um=p.duplicate_separation_um)
    return {"st3": st3[~remove], "spike_index": spike_index(ctx)[~remove],
            "n_duplicates": int(remove.sum())}


def merges_step(ctx) -> dict:
    """find_merges(rez, 1)."""
    st3 = np.asarray(ctx.intermediate.st3)
    res = find_merges(times=st3["time"], templates=st3["template"],
                      sim=np.asarray(ctx.intermediate.simScore), fs=ctx.params.fs)
    return {"st3": _relabel(st3, res.templates), "merges": res.merges}


def _split(ctx, init: str) -> dict:
    p, it, d = ctx.params, ctx.intermediate, ctx.derived
    probe = ctx.probe_good
    st3 = np.asarray(it.st3)
    iC, _, _ = get_closest_channels(xc=probe.xc, yc=probe.yc, sigma_mask=p.sigmaMask,
                                    n_closest=min(probe.Nchan, _NCHAN_NEAR_MAX))
    ka, kb = get_kernels(nt0=p.nt0, nt0min=d.nt0min)
    res = split_all_clusters(
        times=st3["time"], templates=st3["template"], features=it.cProjPC, rows=spike_index(ctx),
        dWU=np.asarray(it.dWU), W=np.asarray(it.W), sim=np.asarray(it.simScore),
        wpca=np.asarray(it.wPCA), iC=iC, Ka=ka, Kb=kb, fs=p.fs, nt0min=d.nt0min,
        auc_split=p.AUCsplit, init=init, running_avg=not d.ks25, legacy_swap=p.matlab_compat)
    out = {k: getattr(res, k) for k in ("dWU", "W", "U", "mu", "simScore", "iNeigh", "iNeighPC",
                                        "isplit", "splits")}
    out.update(st3=_relabel(st3, res.templates), n_ccg_vetoes=res.n_ccg_vetoes)
    return out


def split_svd_step(ctx) -> dict:
    """splitAllClusters(rez, 1): splits along the features' principal direction."""
    return _split(ctx, "svd")


def split_amplitude_step(ctx) -> dict:
    """splitAllClusters(rez, 0): splits along the mean feature vector (amplitude)."""
    return _split(ctx, "mean")


def cutoff_step(ctx) -> dict:
    """set_cutoff(rez): per-unit thresholds on vexp, good/mua labels, contamination."""
    p, it = ctx.params, ctx.intermediate
    st3 = np.asarray(it.st3)
    res = set_cutoff(times=st3["time"], templates=st3["template"], vexp=st3["vexp"],
                     n_templates=np.asarray(it.mu).size, fs=p.fs, Th=p.Th,
                     legacy=p.matlab_compat)
    return {"st3": st3[res.keep], "spike_index": spike_index(ctx)[res.keep], "good": res.good,
            "est_contam_rate": res.est_contam_rate, "Ths": res.Ths}


def good_units_step(ctx) -> dict:
    """get_good_units (Kilosort 2.5): good units must not spread over more than ~100 um."""
    probe = ctx.probe_good
    good = get_good_units(dWU=np.asarray(ctx.intermediate.dWU), xc=probe.xc, yc=probe.yc,
                          good=np.asarray(ctx.intermediate.good))
    return {"good": good}
