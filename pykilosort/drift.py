"""The datashift step: Kilosort 2.5's drift estimate and the drift-corrected proc file.

datashift2.m of v2.5.2: spikes found by generic templates (detector.py) are binned per batch by
depth and amplitude (drift_histograms); align_block2 registers the batches' histograms, rigidly
then in ``nblocks`` overlapping depth blocks; dshift (um per batch and block) then drives the
kriging resampling of every batch (shift_matrix, shift_batch). The batch order iorig sorts the
batches by mean drift.

Differences from the original, all but the first off under ``matlab_compat``:

- the corrected data go to a new file written under a temporary name and renamed when complete
  (the original rewrites its proc file in place: a run killed halfway leaves it half shifted);
- multi-shank probes are registered per shank (the original bins the spikes of all shanks by
  depth together, and kriges each channel from all shanks');
- the recording's first ntbuff samples are not faded in from zero (the original cross-fades the
  first batch with a zero "previous batch").
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .datashift import align_block2, drift_histograms, shift_batch, shift_matrix
from .detector import setup_detector, standalone_detector
from .logs import progress
from .procfile import proc_sample_reader
from .snippets import extract_templates_from_snippets
from .utils import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["datashift_step", "channel_groups", "estimate_drift", "shift_proc_file",
           "corrected_depths", "write_drift_outputs", "st0_matrix", "ST0_COLUMNS",
           "batch_centre_times"]

_DEPTH_BIN = 5.0         # datashift2: dd, um per histogram bin
_NRANK_PC = 6            # generic temporal templates
_MIN_BLOCK_BINS = 10     # narrower blocks (50 um) cannot hold the +-5-bin block search


def channel_groups(probe, *, matlab_compat: bool) -> list[np.ndarray]:
    """Channels registered together: one group per shank (kcoords), or all channels as the
    original does (matlab_compat, or a single shank)."""
    k = np.asarray(probe.kcoords)
    shanks = np.unique(k)
    if matlab_compat or shanks.size < 2:
        return [np.arange(k.size)]
    return [np.flatnonzero(k == s) for s in shanks]


def datashift_step(ctx) -> dict:
    """datashift2(rez, 1): dshift (Nbatch, n_blocks) um, yblk (n_blocks,), dshift_group
    (n_blocks,) the channel group (shank) of each block, iorig, the detections st0, and the
    corrected proc file (``proc``). nblocks=0: iorig only, as the original."""
    p, d, probe = ctx.params, ctx.derived, ctx.probe_good
    nbatch = int(ctx.intermediate.Nbatch)
    if p.nblocks == 0:
        logger.info("nblocks=0: no drift correction; batches in time order")
        return {"iorig": np.arange(nbatch)}
    groups = channel_groups(probe, matlab_compat=p.matlab_compat)
    read, setup, wtemp = detector_inputs(ctx, groups=groups)
    spikes = standalone_detector(
        read=read, setup=setup, wtemp=wtemp, yc=probe.yc, n_batches=nbatch, NT=p.NT,
        ntbuff=p.ntbuff, nt0min=d.nt0min, scaleproc=p.scaleproc, spk_th=p.genericSpkTh,
        max_spikes=p.datashift_max_spikes, put=ctx.backend.put, fetch=ctx.backend.fetch)
    logger.info("drift: %d generic-template detections in %d batches", spikes["time"].size,
                nbatch)
    est = estimate_drift(spikes, yc=probe.yc, groups=groups, n_batches=nbatch,
                         nblocks=p.nblocks, spk_th=p.genericSpkTh,
                         avoid_jumps=not p.matlab_compat)
    iorig = np.argsort(est["dshift"].mean(axis=1), kind="stable")  # sort(mean(dshift, 2))
    path = ctx.output_path("proc_shifted", ".dat")
    shift_proc_file(ctx, dst=path, dshift=est["dshift"], yblk=est["yblk"],
                    block_group=est["dshift_group"], groups=groups)
    out = {"proc": path, "iorig": iorig, "dshift": est["dshift"], "yblk": est["yblk"],
           "dshift_group": est["dshift_group"], "st0": st0_matrix(spikes),
           "wTEMP_detector": wtemp}
    if len(groups) == 1 and est["F"][0] is not None:  # rez.F, F0, F0m of the original
        out.update(F=est["F"][0], F0=est["F0"][0], F0m=est["F0m"][0])
    return out


def detector_inputs(ctx, *, groups: list[np.ndarray]):
    """(read, setup, wtemp): the proc file's reader, the generic templates' geometry and their
    temporal prototypes (6 PCs of snippets; datashift2's wTEMP), as standalone_detector takes
    them."""
    p, d, probe = ctx.params, ctx.derived, ctx.probe_good
    read = proc_sample_reader(ctx)
    wtemp, _ = extract_templates_from_snippets(
        lambda k: read(p.NT * k, p.NT), Nbatch=int(ctx.intermediate.Nbatch), nskip=p.nskip,
        nt0=p.nt0, nt0min=d.nt0min, scaleproc=p.scaleproc, spk_th=p.spkTh, stream=None,
        loc_range=p.loc_range, long_range=p.long_range, n_pcs=_NRANK_PC, spread_init=True)
    return read, setup_detector(xc=probe.xc, yc=probe.yc, groups=groups), wtemp


ST0_COLUMNS = ("time", "depth", "amplitude", "kk", "batch", "centre", "group")


def st0_matrix(spikes: dict) -> np.ndarray:
    """rez.st0 of the original, (n, 7) float64: time (0-based sample of the proc file), depth
    (um), amplitude, kkmax, batch (0-based), centre (0-based), plus the channel group."""
    return np.column_stack([spikes[c] for c in ST0_COLUMNS]).astype(np.float64)


def estimate_drift(spikes: dict, *, yc, groups, n_batches: int, nblocks: int,
                   spk_th: float, avoid_jumps: bool = True) -> dict:
    """Per group: histograms, then align_block2. dshift (Nbatch, n_blocks) um (imin * 5),
    yblk (n_blocks,) um, dshift_group (n_blocks,); and per group the histograms F and
    align_block2's targets F0, F0m (None where there was nothing to register)."""
    yc = np.asarray(yc, np.float64)
    cols, yblks, owner, hist = [], [], [], {"F": [], "F0": [], "F0m": []}
    for g, chans in enumerate(groups):
        sel = spikes["group"] == g
        r = _group_drift(depths=spikes["depth"][sel], amps=spikes["amplitude"][sel],
                         batches=spikes["batch"][sel], ymin=yc[chans].min(),
                         n_batches=n_batches, nblocks=nblocks, spk_th=spk_th, group=g,
                         avoid_jumps=avoid_jumps)
        cols.append(r["dshift"]), yblks.append(r["yblk"])
        owner.append(np.full(r["yblk"].size, g))
        for k in hist:
            hist[k].append(r[k])
    return {"dshift": np.concatenate(cols, axis=1), "yblk": np.concatenate(yblks),
            "dshift_group": np.concatenate(owner), **hist}


def _group_drift(*, depths, amps, batches, ymin, n_batches, nblocks, spk_th, group, avoid_jumps):
    if n_batches < 2 or depths.size == 0:
        why = "one batch" if n_batches < 2 else "no spikes detected"
        logger.warning("drift: %s in channel group %d; its drift is taken as 0", why, group)
        return {"dshift": np.zeros((n_batches, 1)), "yblk": np.array([ymin]), "F": None,
                "F0": None, "F0m": None}
    F, ysamp = drift_histograms(depths=depths, amplitudes=amps, batches=batches,
                                n_batches=n_batches, ymin=ymin, spk_th=spk_th)
    nb = _blocks_that_fit(F.shape[0], nblocks, group)
    imin, yblk, F0, F0m = align_block2(F=F, ysamp=ysamp, nblocks=nb, avoid_jumps=avoid_jumps)
    return {"dshift": imin * _DEPTH_BIN, "yblk": yblk, "F": F, "F0": F0, "F0m": F0m}


def _blocks_that_fit(n_bins: int, nblocks: int, group: int) -> int:
    """nblocks, or fewer when blocks of n_bins // nblocks bins would be narrower than 50 um
    (the original then builds empty or negative-width blocks)."""
    fit = max(1, n_bins // _MIN_BLOCK_BINS)
    if nblocks > fit:
        logger.warning("drift: channel group %d spans %d um of spikes, too little for "
                       "nblocks=%d blocks of at least %d um; using %d", group,
                       n_bins * _DEPTH_BIN, nblocks, _MIN_BLOCK_BINS * _DEPTH_BIN, fit)
        return fit
    return nblocks


def batch_shift_matrix(*, xc, yc, shifts, yblk, block_group, groups, sig: float) -> np.ndarray:
    """M (Nchan, Nchan) of one batch: per group, the kriging matrix of its channels from its
    blocks' shifts (block diagonal: channels are resampled from their own shank only)."""
    n = len(xc)
    M = np.zeros((n, n))
    for g, chans in enumerate(groups):
        cols = block_group == g
        M[np.ix_(chans, chans)] = shift_matrix(xc=xc[chans], yc=yc[chans], shifts=shifts[cols],
                                               ysamp=yblk[cols], sig=sig)
    return M


def shift_proc_file(ctx, *, dst: Path, dshift, yblk, block_group, groups) -> None:
    """shift_batch_on_disk2 over every batch (datashift2's loop), writing ``dst`` under a
    temporary name renamed when complete: a killed run leaves no file a later run could take
    for a corrected one (the original rewrites its proc file in place)."""
    p, probe = ctx.params, ctx.probe_good
    read = proc_sample_reader(ctx)
    xc, yc = np.asarray(probe.xc, np.float64), np.asarray(probe.yc, np.float64)
    be = ctx.backend
    nbatch = dshift.shape[0]
    dprev = (be.xp.zeros((p.ntbuff, probe.Nchan), be.xp.float32) if p.matlab_compat else None)
    with atomic_path(dst) as tmp, open(tmp, "wb") as f:
        for k in progress(range(nbatch), desc="drift: shift batches", total=nbatch):
            M = batch_shift_matrix(xc=xc, yc=yc, shifts=dshift[k], yblk=yblk,
                                   block_group=block_group, groups=groups, sig=p.sig)
            batch = be.put(np.ascontiguousarray(read(p.NT * k, p.NT + p.ntbuff)))
            out, dprev = shift_batch(batch=batch, M=be.put(M.astype(np.float32)), dprev=dprev,
                                     NT=p.NT, ntbuff=p.ntbuff)
            f.write(np.ascontiguousarray(be.to_numpy(out)).tobytes())


def corrected_depths(*, depths, batches, dshift, yblk, block_group=None, groups_of_spikes=None):
    """Spike depths after the correction: a spike at depth y in batch k appears at y plus the
    drift interpolated to y (the resampled channel at y reads the data at y - shift, so a
    feature at y0 moves to y0 + shift)."""
    from .makima import makima

    depths = np.asarray(depths, np.float64)
    out = depths.copy()
    block_group = np.zeros(len(yblk), int) if block_group is None else np.asarray(block_group)
    gs = np.zeros(depths.size, int) if groups_of_spikes is None else np.asarray(groups_of_spikes)
    for g in np.unique(block_group):
        cols = block_group == g
        for k in np.unique(batches):
            sel = (batches == k) & (gs == g)
            s = dshift[k, cols]
            out[sel] += s[0] if s.size == 1 else makima(x=yblk[cols], y=s, xq=depths[sel])
    return out


def batch_centre_times(ctx, n_batches: int) -> np.ndarray:
    """(n_batches,) time (s, from the recording's start) of each batch's centre: where the
    drift estimate of a batch is placed (drift.times, the figure, the demo's comparison)."""
    p = ctx.params
    return (ctx.derived.tstart + p.NT * (np.arange(n_batches) + 0.5)) / p.fs


def write_drift_outputs(ctx, output_dir: Path) -> list[Path]:
    """drift.um (Nbatch, n_blocks), drift_depths.um (n_blocks,), drift.times (Nbatch,) seconds
    at each batch's centre (IBL's names), in the phy folder; nothing without a drift estimate."""
    from .utils import save_npy_atomic

    it = ctx.intermediate
    if "dshift" not in it:
        return []
    times = batch_centre_times(ctx, np.asarray(it.dshift).shape[0])
    files = {"drift.um.npy": np.asarray(it.dshift, np.float64),
             "drift_depths.um.npy": np.asarray(it.yblk, np.float64),
             "drift.times.npy": times}
    for name, arr in files.items():
        save_npy_atomic(output_dir / name, arr)
    return [output_dir / n for n in files]
