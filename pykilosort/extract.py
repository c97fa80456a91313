"""Spike extraction with the learned templates: runTemplates.m and trackAndSort.m (Kilosort2 v2.0).

From the middle of the reordered batches, templates are tracked backwards to the first batch, then
forwards from the middle to the last; on each batch they are re-compressed (template_svd), matched
against the data with features (match_templates), and updated with a slow momentum. Spikes go to
st3 (time, template, amplitude, vexp, batch); template and PC features are streamed to disk batch by
batch, then assembled in the final spike order, so memory does not grow with the recording.

Spike holes (MouseLand/Kilosort#594): the original scans template start times in 1024-sample
blocks, so some stretches near each batch's end are never examined. By default every start time
is examined and each batch owns a half-open range of trough times (consecutive batches' ranges
tile the recording), so no spike is missed or found twice; ``matlab_compat=True`` keeps the
original's geometry.
"""
from __future__ import annotations

import contextlib
import logging
import math
import shutil

import numpy as np

from .kernels import match_templates, template_svd
from .logs import progress
from .neighbours import get_closest_channels
from .procfile import proc_batch_reader, unscaled
from .templates import template_channel_overlap, template_neighbours
from .upsampling import get_kernels
from .utils import atomic_path, release_mapped_pages

logger = logging.getLogger(__name__)

__all__ = ["st3_dtype", "owned_trough_range", "track_and_sort", "run_templates",
           "run_templates_ks25"]

_NRANK = 3


def st3_dtype() -> np.dtype:
    """The st3 record: trough sample (0-based, MATLAB's st3(:,1) value), template (0-based),
    amplitude, vexp, and the position of the batch in the sorted order (0-based)."""
    return np.dtype([("time", np.int64), ("template", np.int32), ("amplitude", np.float32),
                     ("vexp", np.float32), ("batch", np.int32)])


def owned_trough_range(k: int, *, nbatch: int, NT: int, ntbuff: int, nt0: int, nt0min: int):
    """(lo, hi): the trough samples, counted within proc batch ``k``, that batch ``k`` keeps.

    Batch k starts NT - ntbuff samples after batch k-1, and can find troughs in
    [nt0min, NT - nt0 + nt0min]. Each batch keeps [c, NT - ntbuff + c), c = nt0min + (ntbuff -
    nt0 + 1) // 2: these ranges tile the recording, and each lies inside what its batch sees.
    The first batch keeps everything before, the last everything after.
    """
    if ntbuff < nt0 - 1:
        raise ValueError(f"ntbuff={ntbuff} must be >= nt0-1={nt0 - 1} for batches to overlap "
                         "enough to find every spike (or use matlab_compat=True)")
    c = nt0min + (ntbuff - nt0 + 1) // 2
    lo = -math.inf if k == 0 else c
    hi = math.inf if k == nbatch - 1 else NT - ntbuff + c
    return lo, hi


class _FeatureSink:
    """Per-batch blocks of spikes and features written to disk, reassembled in batch order."""

    def __init__(self, folder, nbatch: int):
        self.folder, self.blocks = folder, [None] * nbatch
        shutil.rmtree(self.folder, ignore_errors=True)  # leftovers of a run killed here
        self.folder.mkdir(parents=True)

    def add(self, slot: int, st3: np.ndarray, fw: np.ndarray, fwpc: np.ndarray) -> None:
        path = self.folder / f"batch{slot:06d}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, st3=st3, fw=fw, fwpc=fwpc)
        self.blocks[slot] = path

    def assemble(self, ctx, *, n_nearest: int, n_near_pc: int):
        """st3 (n,) record array in memory; cProj (n, n_nearest) and cProjPC (n, 3, n_near_pc)
        float32 written block by block into .npy files of the context (memory-mapped)."""
        counts = [0 if b is None else np.load(b)["st3"].size for b in self.blocks]
        n = int(sum(counts))
        st3 = np.empty(n, st3_dtype())
        paths = {"cProj": ctx.output_path("cProj"), "cProjPC": ctx.output_path("cProjPC")}
        with atomic_path(paths["cProj"]) as t1, atomic_path(paths["cProjPC"]) as t2, \
                _npy_writer(t1, (n, n_nearest)) as cproj, _npy_writer(t2, (n, _NRANK, n_near_pc)) as cprojpc:
            i = 0
            for path, m in zip(self.blocks, counts):
                if not m:
                    continue
                z = np.load(path)
                st3[i:i + m] = z["st3"]
                cproj.write(np.ascontiguousarray(z["fw"].T, np.float32))
                cprojpc.write(np.ascontiguousarray(np.transpose(z["fwpc"], (2, 1, 0)), np.float32))
                i += m
        for path in self.blocks:
            if path is not None:
                path.unlink()
        return st3, paths


def _extraction_geometry(ctx, rez: dict):
    """(n_near, iC, mask, ka, kb, ilist): neighbour channels and their mask, the sub-sample
    alignment kernels and each template's neighbour templates, shared by both extraction flows."""
    p, probe = ctx.params, ctx.probe_good
    n_near = min(probe.Nchan, 32)
    iC, mask, _ = get_closest_channels(xc=probe.xc, yc=probe.yc, sigma_mask=p.sigmaMask,
                                       n_closest=n_near)
    ka, kb = get_kernels(nt0=p.nt0, nt0min=ctx.derived.nt0min)
    _, ilist = template_neighbours(rez["W"], rez["U"], n_near, backend=ctx.backend)
    return n_near, iC, mask, ka, kb, ilist


def _learned_waveforms(rez: dict, nt0min: int):
    """(W, dWU, iW): a copy of the learned W, dWU = mu * W_j U_j^T per template (double, as
    trackAndSort rebuilds it) and each template's best channel."""
    W, U, mu = rez["W"].copy(), rez["U"], rez["mu"]
    dwu = np.einsum("n,tnr,cnr->tcn", mu, W, U)
    return W, dwu, np.abs(dwu[nt0min - 1]).argmax(axis=0)


def _match_with_features(ctx, data, *, W, U, mu, iC, iW, utu, ilist, wpca):
    """mexMPnu8 of the extraction pass (Params(13) = 2: template and PC features, threshold
    Th(end)), on the backend's device; returns the fetched result."""
    p, put = ctx.params, ctx.backend.put
    return ctx.backend.fetch(match_templates(
        data, U=put(U.astype(np.float32)), W=put(W.astype(np.float32)),
        mu=put(mu.astype(np.float32)), iC=put(iC), iW=put(iW), UtU=put(utu),
        iList=put(ilist), wPCA=wpca, th=p.Th[-1], th_average=p.Th[0], lam=p.lam,
        template_features=True, pc_features=True, stable_mode=p.useStableMode,
        legacy_block=1024 if p.matlab_compat else None))


def track_and_sort(ctx, rez: dict, iorder, slots, sink: _FeatureSink, *, read, iC, mask,
                   ka, kb, ilist, wa, ua, mua) -> np.ndarray:
    """trackAndSort over absolute batches ``iorder`` (their positions in the sorted order are
    ``slots``); fills wa/ua/mua per batch; returns the spike-count estimate nsp."""
    p, d = ctx.params, ctx.derived
    W, dwu, iW = _learned_waveforms(rez, d.nt0min)
    pm, nsp = math.exp(-1.0 / p.momentum[1]), np.zeros(W.shape[1])
    nbatch = int(ctx.intermediate.Nbatch)
    put, fetch = ctx.backend.put, ctx.backend.fetch  # kernels run where the backend is
    wpca = put(rez["wPCA"].astype(np.float32))
    for k, slot in zip(progress(iorder, desc="extract spikes", total=len(iorder)), slots):
        k = int(k)
        data = put(unscaled(read(k), p.scaleproc))
        svd = fetch(template_svd(put(np.asfortranarray(dwu)), put(np.asfortranarray(W)),
                                 iC=put(iC), iW=put(iW), Ka=put(ka), Kb=put(kb), nt0min=d.nt0min))
        W, U, mu = svd.W, svd.U, np.asarray(svd.mu, np.float64).ravel()
        utu, _, _ = template_channel_overlap(iW=iW, iC=iC, mask=mask)
        res = _match_with_features(ctx, data, W=W, U=U, mu=mu, iC=iC, iW=iW, utu=utu,
                                   ilist=ilist, wpca=wpca)
        nsp0 = np.asarray(res.nsp, np.float64)
        fexp = np.exp(nsp0 * math.log(pm))
        dwu = dwu * fexp + (1 - fexp) * (np.asarray(res.dWU) / np.maximum(1, nsp0))
        nsp = nsp * 0.95 + 0.05 * nsp0
        wa[..., k], ua[..., k], mua[:, k] = W, U, mu
        # written pages of the maps would stay resident and grow with the recording (UA is
        # Nchan x Nfilt x 3 x 4 bytes per batch: 1.1 MiB at 384 channels and 250 templates);
        # dropped here they wait in the page cache like any written file
        release_mapped_pages(wa)
        release_mapped_pages(ua)
        sink.add(slot, *_batch_spikes(ctx, res, k, slot, nbatch))
    return nsp


def _batch_spikes(ctx, res, k: int, slot: int, nbatch: int):
    """st3 records of one batch (sorted like sortrows(st3, [5 1 2 3 4])) and their features."""
    p, d = ctx.params, ctx.derived
    st0 = np.asarray(res.st, np.int64)
    keep = np.ones(st0.size, bool)
    if d.ks25:  # v2.5.2 reads NT + 2 ntbuff samples from NT*k; it keeps (ntbuff, NT + ntbuff]
        batch_start = d.tstart + p.NT * k
        keep = (st0 > p.ntbuff) & (st0 <= p.NT + p.ntbuff)
    else:
        batch_start = d.tstart - (0 if k == 0 else p.ntbuff) + (p.NT - p.ntbuff) * k
        if not p.matlab_compat:  # each batch keeps its own range of troughs: no holes, no doubles
            lo, hi = owned_trough_range(k, nbatch=nbatch, NT=p.NT, ntbuff=p.ntbuff, nt0=p.nt0,
                                        nt0min=d.nt0min)
            keep = (st0 + d.nt0min >= lo) & (st0 + d.nt0min < hi)
    st3 = np.empty(int(keep.sum()), st3_dtype())
    st3["time"] = d.nt0min + batch_start + st0[keep]
    st3["template"] = np.asarray(res.template)[keep]
    st3["amplitude"] = np.asarray(res.amplitude)[keep]
    st3["vexp"] = np.asarray(res.vexp)[keep]
    st3["batch"] = slot
    order = np.lexsort((st3["vexp"], st3["amplitude"], st3["template"], st3["time"]))
    fw = np.asarray(res.template_features)[:, keep][:, order]
    fwpc = np.asarray(res.pc_features)[:, :, keep][:, :, order]
    return st3[order], fw, fwpc


def run_templates(ctx, rez: dict, *, iorig: np.ndarray, istart: int) -> dict:
    """runTemplates: extract spikes backwards from the batch ``istart`` (absolute id) to the
    start of the sorted order, then forwards to its end; then compress the per-batch templates.

    Returns rez fields st3 (record array, batches in sorted order), cProj / cProjPC (paths of
    memory-mapped .npy files), WA, UA, muA, W_a, W_b, U_a, U_b, nsp.
    """
    p, probe = ctx.params, ctx.probe_good
    iorig = np.asarray(iorig)
    nbatch, nt0, n_chan, n_filt = iorig.size, p.nt0, probe.Nchan, rez["W"].shape[1]
    n_near, iC, mask, ka, kb, ilist = _extraction_geometry(ctx, rez)
    # per-batch templates grow with the recording: memory-mapped scratch files, not RAM
    sink = _FeatureSink(ctx.path / "features_tmp", nbatch)
    wa = _scratch(sink.folder / "WA.npy", (nt0, n_filt, _NRANK, nbatch))
    ua = _scratch(sink.folder / "UA.npy", (n_chan, n_filt, _NRANK, nbatch))
    mua = np.zeros((n_filt, nbatch), np.float32)
    ihalf = int(np.flatnonzero(iorig == istart)[0])
    kw = dict(read=proc_batch_reader(ctx), iC=iC, mask=mask, ka=ka, kb=kb, ilist=ilist, wa=wa,
              ua=ua, mua=mua)
    back = np.arange(ihalf, -1, -1)
    track_and_sort(ctx, rez, iorig[back], back, sink, **kw)
    fwd = np.arange(ihalf + 1, nbatch)
    nsp = track_and_sort(ctx, rez, iorig[fwd], fwd, sink, **kw)
    st3, paths = sink.assemble(ctx, n_nearest=n_near, n_near_pc=n_near)
    out = {"st3": st3, "cProj": paths["cProj"], "cProjPC": paths["cProjPC"], "muA": mua,
           "nsp": nsp, "iNeigh": ilist}
    out.update(_compress(wa, ua, n_keep=min(n_chan * 3, nbatch, 20)))
    del wa, ua, kw  # release the scratch memory maps before deleting their files
    shutil.rmtree(sink.folder)
    logger.info("extracted %d spikes with %d templates", st3.size, n_filt)
    return out


@contextlib.contextmanager
def _npy_writer(path, shape):
    """A float32 C-order .npy file of ``shape`` filled by sequential writes of whole rows (plain
    writes: written pages of a memory map would count against the process's memory). Raises if
    the rows written do not fill the declared shape exactly."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": tuple(int(x) for x in shape)})
        start = f.tell()
        yield f
        written = f.tell() - start
    expected = 4 * int(np.prod(shape))
    if written != expected:
        raise RuntimeError(f"{path}: wrote {written} bytes of features, the header declares {expected}")


def _scratch(path, shape) -> np.memmap:
    """A zero-filled float32 Fortran-ordered .npy memory map (MATLAB's WA/UA layout)."""
    return np.lib.format.open_memmap(path, "w+", np.float32, shape, fortran_order=True)


def _compress(wa: np.ndarray, ua: np.ndarray, *, n_keep: int) -> dict:
    """runTemplates' SVD of each template's per-batch components: W_a (nt0*3, n_keep, Nfilt)
    scaled left vectors and W_b (Nbatches, n_keep, Nfilt) right vectors, likewise U_a, U_b."""
    out = {}
    for name, arr in (("W", wa), ("U", ua)):
        n_rows, n_filt, n_b = arr.shape[0] * _NRANK, arr.shape[1], arr.shape[3]
        a = np.zeros((n_rows, n_keep, n_filt), np.float32)
        b = np.zeros((n_b, n_keep, n_filt), np.float32)
        for j in range(n_filt):
            x = arr[:, j].reshape(n_rows, n_b, order="F").astype(np.float64)
            release_mapped_pages(arr)  # the pages read stay in the page cache, not in our RSS
            u, s, vt = np.linalg.svd(x, full_matrices=False)
            a[:, :, j] = u[:, :n_keep] * s[:n_keep]
            b[:, :, j] = vt[:n_keep].T
        out[f"{name}_a"], out[f"{name}_b"] = a, b
    return out


def run_templates_ks25(ctx, rez: dict) -> dict:
    """runTemplates / trackAndSort of v2.5.2: one pass over the batches in time order, with the
    learned templates fixed (each batch re-compresses the same dWU, warm-started from the last
    W); each batch is read with ntbuff samples of padding on both sides (the fix of the spike
    holes, #594) and keeps the spikes of its own NT samples. dWU becomes the learned waveforms
    plus every matched spike's, divided by the spike counts nsp.

    Returns rez fields st3, cProj, cProjPC (paths), nsp, iNeigh, dWU (W, U, mu stay the
    learned ones, as in the original).
    """
    from .procfile import proc_sample_reader

    p, d = ctx.params, ctx.derived
    nbatch = int(ctx.intermediate.Nbatch)
    n_near, iC, mask, ka, kb, ilist = _extraction_geometry(ctx, rez)
    W, dwu, iW = _learned_waveforms(rez, d.nt0min)
    utu, _, _ = template_channel_overlap(iW=iW, iC=iC, mask=mask)
    put, fetch = ctx.backend.put, ctx.backend.fetch
    dev = dict(iC=put(iC), iW=put(iW), Ka=put(ka), Kb=put(kb), nt0min=d.nt0min)
    wpca, dwu_dev = put(rez["wPCA"].astype(np.float32)), put(np.asfortranarray(dwu))
    dwu_sum, nsp = dwu.copy(), np.zeros(W.shape[1])
    sink = _FeatureSink(ctx.path / "features_tmp", nbatch)
    read = proc_sample_reader(ctx)
    for k in progress(range(nbatch), desc="extract spikes", total=nbatch):
        batch = read(p.NT * k, p.NT + 2 * p.ntbuff, pad=True)
        data = put(unscaled(batch, p.scaleproc))
        svd = fetch(template_svd(dwu_dev, put(np.asfortranarray(W)), **dev))
        W, U, mu = svd.W, svd.U, np.asarray(svd.mu, np.float64).ravel()
        res = _match_with_features(ctx, data, W=W, U=U, mu=mu, iC=dev["iC"], iW=dev["iW"],
                                   utu=utu, ilist=ilist, wpca=wpca)
        dwu_sum += np.asarray(res.dWU, np.float64)   # padding spikes included, as the original
        nsp += np.asarray(res.nsp, np.float64)
        sink.add(k, *_batch_spikes(ctx, res, k, k, nbatch))
    st3, paths = sink.assemble(ctx, n_nearest=n_near, n_near_pc=n_near)
    shutil.rmtree(sink.folder)
    # a template without spikes keeps its learned waveform (the original divides by 0: inf)
    denom = nsp if p.matlab_compat else np.maximum(nsp, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dwu_avg = dwu_sum / denom
    logger.info("extracted %d spikes with %d templates", st3.size, W.shape[1])
    return {"st3": st3, "cProj": paths["cProj"], "cProjPC": paths["cProjPC"], "nsp": nsp,
            "iNeigh": ilist, "dWU": dwu_avg}
