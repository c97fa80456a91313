"""Kilosort2 preprocessing: good channels, whitening matrix, and the whitened int16 proc file.

The steps follow preprocessDataSub.m, get_good_channels.m, get_whitening_matrix.m,
whiteningLocal.m and whiteningFromCovariance.m of Kilosort2 v2.0.
"""
from __future__ import annotations

import functools
import logging
import math

import numpy as np

from .context import Context
from .errors import DataQualityError
from .filtering import filter_coefficients, gpufilter
from .kernels import count_crossings, round_int16
from .kernels.preprocessing import sparse_whitening, whiten_sparse
from .io import read_batch, read_batch_ks25
from .logs import progress
from .utils import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["get_good_channels", "get_whitening_matrix", "whitening_from_covariance",
           "whitening_local", "good_channels_step", "whitening_step",
           "preprocess_step"]

_MIN_WINDOW = 30      # my_min(datr, 30, 1): local minimum over +-30 samples
_WHITEN_EPS = 1e-6    # whiteningFromCovariance's eps


def _coefficients(params):
    return filter_coefficients(fs=params.fs, fshigh=params.fshigh, fslow=params.fslow)


def _to_numpy(ctx: Context, a) -> np.ndarray:
    return ctx.backend.to_numpy(a)


def _filter(ctx: Context, buff: np.ndarray, chan_map, b, a):
    """gpufilter of raw samples ``buff`` (n, NchanTOT) on ctx's device."""
    return gpufilter(ctx.backend.asarray(buff, order="C"), chan_map=chan_map, b=b, a=a,
                     car=ctx.params.CAR)


def get_good_channels(ctx: Context) -> np.ndarray:
    """(Nchan,) bool over the connected channels: threshold-crossing rate >= minfr_goodchannels.

    Visits every ceil(Nbatch/100)-th stretch of NT samples (no filter buffers), z-scores each
    channel, and counts local minima (within +-30 samples) below spkTh away from the edges.
    """
    p, d = ctx.params, ctx.derived
    chan_map = ctx.probe.connected_only().chanMap
    b, a = _coefficients(p)
    counts = np.zeros(chan_map.size, np.int64)
    ttime = 0.0
    batches = range(0, d.Nbatch, math.ceil(d.Nbatch / 100))
    for ibatch in progress(batches, desc="good channels"):
        start = d.tstart + p.NT * ibatch
        if start >= ctx.raw_data.n_samples:
            break
        buff = ctx.raw_data.read(start, min(start + p.NT, ctx.raw_data.n_samples))
        datr = _filter(ctx, buff, chan_map, b, a)
        # the original excludes crossings within nt0 of the ends of a stretch of NT samples even
        # when the last stretch is shorter, so crossings at its (filter-distorted) end count
        edge_nt = p.NT if p.matlab_compat else datr.shape[0]
        counts += count_crossings(datr, spk_th=p.spkTh, nt0=p.nt0, NT=edge_nt,
                                  half_window=_MIN_WINDOW)
        ttime += datr.shape[0] / p.fs
    rate = counts / ttime
    igood = rate >= p.minfr_goodchannels
    logger.info("found %d threshold crossings in %.2f s of data; %d of %d channels are bad",
                counts.sum(), ttime, (~igood).sum(), igood.size)
    return igood


def whitening_from_covariance(cc: np.ndarray) -> np.ndarray:
    """Symmetric (ZCA) whitening of covariance ``cc`` (n, n): E diag(1/sqrt(D + 1e-6)) E^T."""
    e, dvals, _ = np.linalg.svd(cc)
    return (e / np.sqrt(dvals + _WHITEN_EPS)) @ e.T


def whitening_local(cc: np.ndarray, *, xc: np.ndarray, yc: np.ndarray, n_range: int) -> np.ndarray:
    """Whitening where channel j is whitened using only its ``n_range`` nearest channels.

    Column j of the result is the first column of the ZCA matrix of those channels' covariance,
    placed on their rows (whiteningLocal.m). Nearest by squared distance, stable ties.
    """
    n = cc.shape[0]
    wrot = np.zeros((n, n))
    for j in range(n):
        ds = (xc - xc[j]) ** 2 + (yc - yc[j]) ** 2
        ilocal = np.argsort(ds, kind="stable")[:n_range]
        wrot[ilocal, j] = whitening_from_covariance(cc[np.ix_(ilocal, ilocal)])[:, 0]
    return wrot


def get_whitening_matrix(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """(Wrot, CC): whitening matrix (Nchan, Nchan) times scaleproc, and the covariance used.

    CC sums datr'*datr/NT over every nSkipCov-th preprocessing batch (with buffers). The original
    divides the sum by ceil((Nbatch-1)/nSkipCov), which is not the number of batches summed (and is
    0 for a single batch); ``matlab_compat=True`` keeps that, otherwise we divide by the count.
    """
    p, d = ctx.params, ctx.derived
    probe = ctx.probe_good
    b, a = _coefficients(p)
    xp = ctx.backend.xp
    cc = xp.zeros((probe.Nchan, probe.Nchan), xp.float32)
    batches = range(0, d.Nbatch, p.nSkipCov)
    for ibatch in progress(batches, desc="whitening"):
        buff, _ = read_batch(ctx.raw_data, ibatch, NT=p.NT, ntbuff=p.ntbuff, NTbuff=d.NTbuff,
                             tstart=d.tstart, hi=ctx.raw_data.n_samples)
        datr = _filter(ctx, buff, probe.chanMap, b, a)
        cc += (datr.T @ datr) / np.float32(p.NT)
    cc = _to_numpy(ctx, cc).astype(np.float64)
    divisor = math.ceil((d.Nbatch - 1) / p.nSkipCov) if p.matlab_compat else len(batches)
    if divisor == 0:
        raise DataQualityError("matlab_compat=True reproduces get_whitening_matrix's division by "
                               "ceil((Nbatch-1)/nSkipCov), which is 0 for a single batch; use "
                               "matlab_compat=False or a longer recording.")
    cc /= divisor
    if not np.any(np.diag(cc) > 0):
        raise DataQualityError("the filtered data are zero on every channel (a flat recording?): "
                               "there is nothing to whiten; check the file, dtype and n_channels.")
    if not p.do_whitening:
        var = np.diag(cc)
        return np.diag(p.scaleproc / np.sqrt(np.where(var > 0, var, 1.0))), cc
    if math.isinf(p.whiteningRange):
        wrot = whitening_from_covariance(cc)
    else:
        n_range = int(min(p.whiteningRange, probe.Nchan))
        wrot = whitening_local(cc, xc=probe.xc, yc=probe.yc, n_range=n_range)
    return p.scaleproc * wrot, cc


def write_proc(ctx: Context, wrot: np.ndarray, path) -> int:
    """Filter, crop, whiten and write every batch; returns the number of batches written."""
    writer = _write_proc_ks25 if ctx.derived.ks25 else _write_proc_ks2
    with open(path, "wb") as f:
        for block in writer(ctx, _whitener(ctx, wrot)):
            f.write(block)
    return ctx.derived.Nbatch


def _whitener(ctx: Context, wrot: np.ndarray):
    """datr (n, Nchan) -> datr @ wrot, float32 on ctx's device.

    On the CPU a local whitening matrix on many channels is mostly zeros, and the sort runs
    BLAS on one thread: the product skips them (:func:`whiten_sparse`). Otherwise each flow
    keeps the dense product its writer always computed.
    """
    cols = sparse_whitening(wrot) if ctx.backend.name == "cpu" else None
    if cols is not None:
        return functools.partial(whiten_sparse, cols=cols)
    w = ctx.backend.asarray(wrot, dtype=np.float32)
    if ctx.derived.ks25:
        return lambda datr: datr @ w
    return lambda datr: (w.T @ datr.T).T  # computed this way round, it is Fortran-ordered


def _write_proc_ks2(ctx: Context, whiten):
    """v2.0 preprocessDataSub: batches overlap by ntbuff; each block is NT x Nchan time-fastest
    (MATLAB fwrite of an NT x Nchan matrix), block k at byte k*NT*Nchan*2."""
    p, d = ctx.params, ctx.derived
    chan_map = ctx.probe_good.chanMap
    b, a = _coefficients(p)
    for ibatch in progress(range(d.Nbatch), desc="preprocess", total=d.Nbatch):
        buff, ioffset = read_batch(ctx.raw_data, ibatch, NT=p.NT, ntbuff=p.ntbuff, NTbuff=d.NTbuff,
                                   tstart=d.tstart, hi=ctx.raw_data.n_samples)
        datr = _filter(ctx, buff, chan_map, b, a)[ioffset: ioffset + p.NT]
        whitened = whiten(datr)
        yield np.asfortranarray(_to_numpy(ctx, round_int16(whitened))).T  # C view: time fastest


def _write_proc_ks25(ctx: Context, whiten):
    """v2.5 preprocessDataSub: consecutive batches of NT; the first ntbuff samples of each batch
    are cross-faded (linearly) with the previous batch's filtered look-ahead; blocks are written
    channel-fastest (int16(datr')). The original fades the recording's very first ntbuff samples
    in from zero; ``matlab_compat=True`` keeps that, otherwise the first batch is not faded."""
    p, d = ctx.params, ctx.derived
    chan_map = ctx.probe_good.chanMap
    b, a = _coefficients(p)
    xp = ctx.backend.xp
    ntb = p.ntbuff
    w_edge = xp.linspace(0, 1, ntb, dtype=xp.float32)[:, None]
    prev = None
    for ibatch in progress(range(d.Nbatch), desc="preprocess", total=d.Nbatch):
        buff = read_batch_ks25(ctx.raw_data, ibatch, NT=p.NT, ntbuff=ntb, NTbuff=d.NTbuff,
                               tstart=d.tstart, hi=ctx.raw_data.n_samples)
        datr = _filter(ctx, buff, chan_map, b, a)
        if prev is None and p.matlab_compat:
            prev = xp.zeros((ntb, chan_map.size), xp.float32)
        if prev is not None:
            datr[ntb: 2 * ntb] = w_edge * datr[ntb: 2 * ntb] + (1 - w_edge) * prev
        prev = datr[ntb + p.NT: 2 * ntb + p.NT].copy()
        out = round_int16(whiten(datr[ntb: ntb + p.NT]))
        yield np.ascontiguousarray(_to_numpy(ctx, out))  # channel fastest


# ---------------------------------------------------------------------- pipeline steps
def good_channels_step(ctx: Context) -> dict:
    n = ctx.probe.connected_only().Nchan
    if ctx.params.drift_correction:
        logger.info("Kilosort 2.5 preprocessing keeps every connected channel (no good-channel "
                    "selection; minfr_goodchannels is not used)")
        return {"igood": np.ones(n, bool)}
    igood = get_good_channels(ctx) if ctx.params.minfr_goodchannels > 0 else np.ones(n, bool)
    if not igood.any():
        raise _no_good_channel_error(ctx)
    return {"igood": igood}


def _no_good_channel_error(ctx: Context) -> DataQualityError:
    p, d = ctx.params, ctx.derived
    n = d.tend - d.tstart
    length = f"the {n} samples ({n / p.fs:.3g} s) sorted"
    if n <= 2 * p.nt0:
        why = (f"; crossings are counted from nt0={p.nt0} samples after the start of a stretch to "
               f"nt0 before its end, so this step needs more than 2*nt0 = {2 * p.nt0} samples: "
               "pass minfr_goodchannels=0 to skip it, or sort a longer recording")
    else:
        why = (": check n_channels, the probe and spkTh, or pass minfr_goodchannels=0 to keep "
               "every channel")
    return DataQualityError(f"no channel reaches minfr_goodchannels={p.minfr_goodchannels} Hz of "
                            f"threshold crossings (spkTh={p.spkTh}) in {length}{why}.")


def whitening_step(ctx: Context) -> dict:
    wrot, cc = get_whitening_matrix(ctx)
    return {"Wrot": wrot, "CC": cc}


def preprocess_step(ctx: Context) -> dict:
    path = ctx.output_path("proc", ".dat")
    with atomic_path(path) as tmp:  # a killed run leaves no half proc file that looks complete
        nbatch = write_proc(ctx, np.asarray(ctx.intermediate.Wrot), tmp)
    probe = ctx.probe_good
    return {"proc": path, "Nbatch": nbatch, "NT": ctx.params.NT,
            "proc_layout": "channel_fastest" if ctx.derived.ks25 else "time_fastest",
            "chanMap": probe.chanMap, "xc": probe.xc, "yc": probe.yc, "kcoords": probe.kcoords}
