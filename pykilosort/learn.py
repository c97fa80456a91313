"""Template learning: learnAndSolve8b.m of Kilosort2 v2.0 (learnTemplates, then runTemplates).

In learnTemplates, batches are visited in ``learning_order``: the first half of the reordered batches backwards,
then forwards (Kilosort 2.5: every batch once, in the order of their drift, iorig). On each batch the running-average waveforms dWU are compressed to rank-3
templates (template_svd), matched against the data (match_templates), updated with momentum
from the matched spikes, thinned every 5 batches (triage_templates) and extended with new
templates found in the residual (detect_new_spikes).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from .extract import run_templates, run_templates_ks25
from .kernels import detect_new_spikes, match_templates, template_svd
from .logs import progress
from .neighbours import get_closest_channels
from .procfile import proc_batch_reader, proc_sample_reader, unscaled
from .random import make_stream
from .snippets import extract_templates_from_snippets
from .templates import (memorize_w, template_channel_overlap, template_neighbours,
                        triage_templates)
from .upsampling import get_kernels

logger = logging.getLogger(__name__)

__all__ = ["learning_order", "learn_templates", "learn_step"]

_NRANK_PC, _NRANK = 6, 3    # generic waveforms for detection; rank of the templates
_P1 = 0.95                  # decay of the spike-count estimate per batch
_NEW_TEMPLATE_MU = 10.0     # amplitude given to a template born from the residual


def learning_order(iorig: np.ndarray) -> np.ndarray:
    """iorig([ihalf:-1:1 1:ihalf]) (0-based): the first half of the sorted batches, back and forth."""
    ihalf = math.ceil(len(iorig) / 2)
    return np.concatenate([iorig[ihalf - 1::-1], iorig[:ihalf]])


def _project(snippets: np.ndarray, wpca: np.ndarray) -> np.ndarray:
    """wPCAd * (wPCAd' * dWU(:,:)): keep each (nt0,) waveform's part in the PC subspace (float64)."""
    s = np.asarray(snippets, np.float64)
    flat = s.reshape(s.shape[0], -1, order="F")
    return (wpca @ (wpca.T @ flat)).reshape(s.shape, order="F")


def learn_templates(ctx, iorder: np.ndarray) -> dict:
    """Run learnTemplates over batches ``iorder`` (0-based); returns rez fields W, U, mu, dWU,
    Wraw, nsp, simScore, iNeighPC, iNeigh (0-based), wPCA, wTEMP."""
    p, probe, d = ctx.params, ctx.probe_good, ctx.derived
    read = proc_batch_reader(ctx)
    stream = make_stream(p.random_stream, p.LTseed if p.LTseed is not None else p.seed)
    wtemp, wpca6 = extract_templates_from_snippets(
        read, Nbatch=int(ctx.intermediate.Nbatch), nskip=p.nskip, nt0=p.nt0, nt0min=d.nt0min,
        scaleproc=p.scaleproc, spk_th=-6.0, stream=stream, loc_range=p.loc_range,
        long_range=p.long_range, n_pcs=_NRANK_PC, spread_init=d.ks25)
    if d.ks25:  # v2.5.2 learnTemplates reads NT + ntbuff samples from each batch's start
        samples = proc_sample_reader(ctx)
        read = lambda k: samples(p.NT * k, p.NT + p.ntbuff)  # noqa: E731
    wpca = wpca6[:, :_NRANK].astype(np.float64)
    n_chan = probe.Nchan
    n_near = min(n_chan, 32)
    iC, mask, c2c = get_closest_channels(xc=probe.xc, yc=probe.yc, sigma_mask=p.sigmaMask,
                                         n_closest=n_near)
    ka, kb = get_kernels(nt0=p.nt0, nt0min=d.nt0min)
    w0 = np.asfortranarray(wpca[:, None, :])                      # (nt0, 1, 3)
    pmi = np.exp(-1.0 / np.linspace(p.momentum[0], p.momentum[1], len(iorder)))
    m0 = p.minFR * p.NT / p.fs
    n_filt_max = p.nfilt_factor * n_chan
    put, fetch = ctx.backend.put, ctx.backend.fetch  # kernels run where the backend is
    detect = dict(templates=put(wtemp), iC=put(iC), th=p.Th[0], n_sum=min(n_chan, 7))
    st = _State()
    for ib, k in enumerate(progress(iorder, desc="learn templates", total=len(iorder))):
        data = put(unscaled(read(int(k)), p.scaleproc))
        if ib == 0:
            st.start(_project(fetch(detect_new_spikes(data, **detect).snippets), wpca), w0, m0)
        iW = np.abs(st.dWU[d.nt0min - 1]).argmax(axis=0)          # best channel of each template
        order = np.argsort(iW, kind="stable")
        iW, st.W, st.dWU, st.nsp = iW[order], st.W[:, order], st.dWU[:, :, order], st.nsp[order]
        svd = fetch(template_svd(put(np.asfortranarray(st.dWU)), put(np.asfortranarray(st.W)),
                                 iC=put(iC), iW=put(iW), Ka=put(ka), Kb=put(kb), nt0min=d.nt0min))
        st.W, st.U, st.mu = svd.W, svd.U, np.asarray(svd.mu, np.float64).ravel()
        utu, _, _ = template_channel_overlap(iW=iW, iC=iC, mask=mask)
        res = match_templates(data, U=put(st.U.astype(np.float32)), W=put(st.W.astype(np.float32)),
                              mu=put(st.mu.astype(np.float32)), iC=put(iC), iW=put(iW),
                              UtU=put(utu), th=p.Th[0], th_average=p.Th[0], lam=p.lam,
                              stable_mode=p.useStableMode,
                              legacy_block=1024 if p.matlab_compat else None)
        nsp0 = np.asarray(fetch(res.nsp), np.float64)
        fexp = np.exp(nsp0 * np.log(pmi[ib]))
        st.dWU = st.dWU * fexp + (1 - fexp) * (fetch(res.dWU) / np.maximum(1, nsp0))
        st.nsp = st.nsp * _P1 + (1 - _P1) * nsp0
        if ib < len(iorder) - 1:
            if ib % 5 == 0:
                st.triage(p, iW)
            residual = ctx.backend.xp.asfortranarray(res.residual)  # stays on the device
            new = fetch(detect_new_spikes(residual, **detect).snippets)
            if new.shape[2]:
                st.add(_project(new, wpca), w0, m0, n_filt_max)
    st.triage(p, None)
    return st.finish(iC=iC, n_near=n_near, nt0min=d.nt0min, wpca=wpca, wtemp=wtemp,
                     backend=ctx.backend)


class _State:
    """The evolving templates: W (nt0, Nfilt, 3), U, mu, dWU (nt0, Nchan, Nfilt), nsp, drops."""

    def start(self, dWU, w0, m0):
        n = dWU.shape[2]
        self.dWU, self.W = dWU, np.repeat(w0, n, axis=1)
        self.nsp, self.mu, self.U = np.full(n, m0), np.zeros(n), None
        self.ndrop = np.zeros(2)

    def triage(self, p, iW):
        out = triage_templates(W=self.W, U=self.U, dWU=self.dWU, mu=self.mu, nsp=self.nsp,
                               ndrop=self.ndrop, min_fr=p.minFR, NT=p.NT, fs=p.fs)
        self.W, self.U, self.dWU, self.mu, self.nsp, self.ndrop = out

    def add(self, dWU0, w0, m0, n_filt_max):
        n = dWU0.shape[2]
        self.dWU = np.concatenate([self.dWU, dWU0], axis=2)[:, :, :n_filt_max]
        self.W = np.concatenate([self.W, np.repeat(w0, n, axis=1)], axis=1)[:, :n_filt_max]
        self.nsp = np.concatenate([self.nsp, np.full(n, m0)])[:n_filt_max]
        self.mu = np.concatenate([self.mu, np.full(n, _NEW_TEMPLATE_MU)])[:n_filt_max]

    def finish(self, *, iC, n_near, nt0min, wpca, wtemp, backend) -> dict:
        wtw, ineigh = template_neighbours(self.W, self.U, n_near, backend=backend)
        iW = np.abs(self.dWU[nt0min - 1]).argmax(axis=0)
        rez = memorize_w(W=self.W, dWU=self.dWU, U=self.U, mu=self.mu)
        rez.update(nsp=self.nsp, simScore=wtw.max(axis=2), iNeighPC=iC[:, iW], iNeigh=ineigh,
                   wPCA=wpca, wTEMP=wtemp)
        return rez


def learn_step(ctx) -> dict:
    """learnAndSolve8b: learn templates on half the reordered batches (back and forth), then
    extract spikes from all batches starting in the middle of the sorted order (Kilosort 2.5:
    learn on every batch once in drift order, then extract in time order)."""
    if ctx.derived.ks25:
        return _learn_step_ks25(ctx)
    iorig = np.asarray(ctx.intermediate.iorig)
    rez = learn_templates(ctx, learning_order(iorig))
    istart = int(iorig[math.ceil(iorig.size / 2) - 1])
    out = run_templates(ctx, rez, iorig=iorig, istart=istart)
    keep = ("W", "U", "mu", "dWU", "Wraw", "simScore", "iNeighPC", "wPCA", "wTEMP")
    out.update({k: np.asarray(rez[k]) for k in keep})
    out["istart"] = istart  # per-batch templates WA/UA are kept only compressed (W_a, U_a, ...)
    return out


def _learn_step_ks25(ctx) -> dict:
    """learnAndSolve8b of v2.5.2: learnTemplates over iorig (batches sorted by drift, each
    once), then runTemplates in time order with the templates fixed."""
    iorig = np.asarray(ctx.intermediate.iorig)
    rez = learn_templates(ctx, iorig)
    out = run_templates_ks25(ctx, rez)
    keep = ("W", "U", "mu", "Wraw", "simScore", "iNeighPC", "wPCA", "wTEMP")
    out.update({k: np.asarray(rez[k]) for k in keep})
    out["istart"] = math.ceil(iorig.size / 2) - 1  # rez.istart: set, and unused, by v2.5.2
    return out
