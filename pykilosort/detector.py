"""Kilosort 2.5's generic-template spike detector (standalone_detector.m, setup_detector.m).

datashift2 needs every spike's depth, not its identity. It detects spikes with rank-one generic
templates: a temporal prototype (wTEMP, 6 of them) times a Gaussian spatial footprint of one of
5 widths, centred on a grid twice as fine as the channel pitch in depth and 16 um wide in x.
The detector (spikedetector3) returns, per spike, the grid centre and the projections on the
centre's 10 nearest channels; the depth is their positive-part centre of mass.

Where the original breaks: getClosestChannels2 asks for 10 channels around each centre and 100
centres around each centre, and fails with "Index exceeds array bounds" when a probe has fewer
(16- or 32-channel probes, MouseLand/Kilosort#255, #268, #461, #705). Here both counts are capped
at what exists; on larger probes nothing changes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import DataQualityError
from .logs import progress

logger = logging.getLogger(__name__)

__all__ = ["DetectorSetup", "detector_grid", "closest_points", "setup_detector",
           "depth_of_spikes", "standalone_detector"]

_SIG = 10.0            # standalone_detector: base width (um) of the Gaussian footprints
_NSIZES = 5            # footprint widths sig * (1..5)
_N_NEAR = 10           # channels around each centre (NchanNear)
_N_NEAR_UP = 100       # centres around each centre compared for a local maximum (10 * NchanNear)
_NEAR_ACTIVE_SITE = 30.0  # centres farther than this (um) from every channel are dropped
_X_STEP = 16.0         # datashift2: npt = floor(xrange / 16) x positions


def matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's start:step:stop for step > 0 (the end included up to rounding)."""
    n = int(np.floor((stop - start) / step * (1 + 1e-12) + 1e-10)) + 1
    return start + step * np.arange(max(n, 0))


def detector_grid(*, xc: np.ndarray, yc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yup, xup): the generic templates' depths, ymin:pitch/2:ymax with the pitch the median
    vertical spacing, and x positions linspace(xmin, xmax, floor(xrange/16) + 1) (MATLAB's
    linspace, whose one-point form is xmax)."""
    yc, xc = np.asarray(yc, np.float64), np.asarray(xc, np.float64)
    depths = np.unique(yc)
    if depths.size < 2:
        raise DataQualityError(
            "drift correction needs channels at two depths at least (all channels are at "
            f"y = {depths[0]:g} um): pass nblocks=0 to sort without drift correction.")
    pitch = float(np.median(np.diff(depths)))
    yup = matlab_colon(yc.min(), pitch / 2, yc.max())
    npt = int(np.floor((xc.max() - xc.min()) / _X_STEP))
    xup = np.array([xc.max()]) if npt == 0 else np.linspace(xc.min(), xc.max(), npt + 1)
    return yup, xup


def closest_points(*, ycup, xcup, yc, xc, n: int) -> tuple[np.ndarray, np.ndarray]:
    """getClosestChannels2: for each point (xcup, ycup), the ``n`` nearest of (xc, yc) (capped
    at how many there are: the original fails instead) and their distances.

    Returns iC (n, n_points) int32 0-based, nearest first (stable: ties keep index order), and
    dist (n, n_points) float32 (um).
    """
    c2c = np.sqrt((np.asarray(xc, np.float64)[:, None] - np.asarray(xcup, np.float64)[None, :]) ** 2
                  + (np.asarray(yc, np.float64)[:, None] - np.asarray(ycup, np.float64)[None, :]) ** 2)
    n = min(int(n), c2c.shape[0])
    isort = np.argsort(c2c, axis=0, kind="stable")[:n]
    dist = np.take_along_axis(c2c, isort, axis=0).astype(np.float32)
    return isort.astype(np.int32), dist


@dataclass(frozen=True)
class DetectorSetup:
    """The generic templates' geometry (setup_detector's detset), arrays as spikedetector3 takes
    them: iC/dist (NchanNear, NchanUp) channels around each centre, iC2/dist2 (NchanNearUp,
    NchanUp) centres around each centre, v2 (5, NchanUp) squared norms of the footprints,
    ycup/xcup (NchanUp,) the centres (um), group (NchanUp,) the channel group of each centre."""
    iC: np.ndarray
    dist: np.ndarray
    iC2: np.ndarray
    dist2: np.ndarray
    v2: np.ndarray
    ycup: np.ndarray
    xcup: np.ndarray
    group: np.ndarray


def setup_detector(*, xc: np.ndarray, yc: np.ndarray, groups: list[np.ndarray] | None = None,
                   sig: float = _SIG) -> DetectorSetup:
    """Centres on each group's grid (default: one group of all channels, as the original), kept
    within 30 um of a channel of their group; channel and centre neighbourhoods stay inside the
    group (per shank: a spike is never located with another shank's channels)."""
    xc, yc = np.asarray(xc, np.float64), np.asarray(yc, np.float64)
    groups = [np.arange(xc.size)] if groups is None else groups
    n_near = min(_N_NEAR, min(g.size for g in groups))
    parts = [_group_centres(xc=xc, yc=yc, chans=g, n_near=n_near) for g in groups]
    n_near_up = min(_N_NEAR_UP, min(p[2].size for p in parts))
    iC, dist, ycup, xcup, iC2, dist2, group, offset = [], [], [], [], [], [], [], 0
    for k, (gi, gd, gy, gx) in enumerate(parts):
        c2, d2 = closest_points(ycup=gy, xcup=gx, yc=gy, xc=gx, n=n_near_up)
        iC.append(gi), dist.append(gd), ycup.append(gy), xcup.append(gx)
        iC2.append(c2 + offset), dist2.append(d2), group.append(np.full(gy.size, k))
        offset += gy.size
    dist = np.concatenate(dist, axis=1)
    sizes = np.float32(sig) * np.arange(1, _NSIZES + 1, dtype=np.float32)
    v2 = np.exp(np.float32(-2) * dist[None] ** 2 / sizes[:, None, None] ** 2).sum(axis=1,
                                                                               dtype=np.float32)
    return DetectorSetup(iC=np.concatenate(iC, axis=1), dist=dist, v2=v2,
                         iC2=np.concatenate(iC2, axis=1), dist2=np.concatenate(dist2, axis=1),
                         ycup=np.concatenate(ycup), xcup=np.concatenate(xcup),
                         group=np.concatenate(group))


def _group_centres(*, xc, yc, chans, n_near):
    """One group's centres near a channel: (iC global channel ids, dist, ycup, xcup)."""
    yup, xup = detector_grid(xc=xc[chans], yc=yc[chans])
    ycup, xcup = np.repeat(yup, xup.size), np.tile(xup, yup.size)  # meshgrid(yup, xup)(:)
    iC, dist = closest_points(ycup=ycup, xcup=xcup, yc=yc[chans], xc=xc[chans], n=n_near)
    good = dist[0] < _NEAR_ACTIVE_SITE
    return chans[iC[:, good]].astype(np.int32), dist[:, good], ycup[good], xcup[good]


def depth_of_spikes(*, features: np.ndarray, centres: np.ndarray, iC: np.ndarray,
                    yc: np.ndarray) -> np.ndarray:
    """standalone_detector's depth: the centre of mass of the positive projections cF over the
    centre's channels, in single precision as the original ((n,) float32, um)."""
    cf = np.maximum(np.float32(0), np.asarray(features, np.float32))
    total = cf.sum(axis=0, dtype=np.float32)
    # the spike's own footprint is a positive sum of these projections: some are > 0
    cf = cf / np.where(total > 0, total, np.float32(1))
    ys = np.asarray(yc, np.float32)[iC[:, centres]]
    return (cf * ys).sum(axis=0, dtype=np.float32)


def standalone_detector(*, read, setup: DetectorSetup, wtemp: np.ndarray, yc: np.ndarray,
                        n_batches: int, NT: int, ntbuff: int, nt0min: int, scaleproc: float,
                        spk_th: float, max_spikes: int | None, put=np.asarray,
                        fetch=lambda x: x) -> dict:
    """Spikes of the whole proc file found by the generic templates (standalone_detector.m).

    read(start, n) gives proc samples (the NT + ntbuff samples from each batch's start, as
    get_batch reads them). Returns arrays over spikes: time (samples from the proc file's
    start, trough at + nt0min), depth (um), amplitude (integer), kk (the best footprint and
    prototype, r + 6 k), batch (0-based), centre, group; and capped (batches that hit ``max_spikes``, with their counts)."""
    from .kernels import detect_generic_spikes
    from .procfile import unscaled

    dev = {k: put(v) for k, v in dict(iC=setup.iC, dist=setup.dist, v2=setup.v2, iC2=setup.iC2,
                                       dist2=setup.dist2).items()}
    templates = put(np.asarray(wtemp, np.float32))
    parts, capped = [], {}
    for k in progress(range(n_batches), desc="drift: detect spikes", total=n_batches):
        data = put(unscaled(read(NT * k, NT + ntbuff), scaleproc))
        res = detect_generic_spikes(data, templates=templates, nt0min=nt0min, spk_th=spk_th,
                                    sig=_SIG, max_spikes=max_spikes, keep_scores=False, **dev)
        # only the spikes are needed: dout / kkmax ((NT, NchanUp), hundreds of MB per batch) are
        # dropped, which lets the CPU twin skip the scores provably below the threshold
        res = fetch(res)
        times, centres = np.asarray(res.times), np.asarray(res.centres)
        if res.n_found > times.size:
            capped[k] = int(res.n_found)
        depth = depth_of_spikes(features=res.features, centres=centres, iC=setup.iC, yc=yc)
        parts.append((times + nt0min + NT * k, depth, np.asarray(res.amplitudes),
                      np.asarray(res.kk), np.full(times.size, k), centres))
    cols = [np.concatenate(c) for c in zip(*parts)] if parts else [np.zeros(0)] * 6
    _report_cap(capped, max_spikes)
    centre = cols[5].astype(np.int64)
    return {"time": cols[0].astype(np.int64), "depth": cols[1].astype(np.float32),
            "amplitude": cols[2].astype(np.float64), "kk": cols[3].astype(np.int64),
            "batch": cols[4].astype(np.int64), "centre": centre, "group": setup.group[centre],
            "capped": capped}


def _report_cap(capped: dict, max_spikes) -> None:
    if capped:
        lost = sum(n - max_spikes for n in capped.values())
        logger.warning(
            "drift detection: %d batches found more than datashift_max_spikes=%d spikes (up to "
            "%d); %d detections were left out of the drift estimate (the first of each batch "
            "are kept). Raise datashift_max_spikes, or pass None to keep all.",
            len(capped), max_spikes, max(capped.values()), lost)
