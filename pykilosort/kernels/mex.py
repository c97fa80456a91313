"""The seven Kilosort2 mex functions (and Kilosort 2.5's spikedetector3) with MATLAB's calling
convention, over our kernels.

``call_mex(name, args)`` takes the arguments exactly as the original's MATLAB code passes them
(the float64 ``Params`` vector first, 0-based index arrays such as ``iC-1``, MATLAB shapes) and
returns the outputs in the mex's order and shapes. It reproduces Kilosort2 v2.0's mex behaviour
(1024-sample coverage, unmatched spikes to template 0, the trough offset of mexSVDsmall2), so it
can stand in for the compiled mex files when the original MATLAB code runs without a GPU: the
Octave drivers in ``matlab_reference/`` use it to capture the exact inputs of each call.

The Params entries each mex reads are checked against the array shapes (the original trusts them
and reads out of bounds when they disagree).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..backend import array_module
from .clustering import cluster_projections
from .distances import template_distances
from .getspikes import detect_new_spikes
from .mpnu8 import match_templates
from .spikedetector import ORIGINAL_MAX_SPIKES, detect_generic_spikes
from .svdsmall import template_svd
from .thspkpc import threshold_spike_pcs
from .wtw import template_cross_correlations

__all__ = ["call_mex", "MEX_FUNCTIONS", "KS25_MEX_FUNCTIONS", "params_entry", "array_digest"]


def params_entry(params, index: int, name: str) -> float:
    """``Params(index)`` (1-based, as in the MATLAB source); a clear error if it is missing."""
    p = np.asarray(params, dtype=np.float64).ravel()
    if not 1 <= index <= p.size:
        raise ValueError(f"Params has {p.size} entries; the mex reads Params({index}) ({name})")
    return float(p[index - 1])


def _expect(params, index: int, name: str, actual: int) -> None:
    value = params_entry(params, index, name)
    if int(value) != int(actual):
        raise ValueError(f"Params({index}) = {value:g} ({name}) disagrees with the arrays ({actual})")


def _idx(a):
    """A MATLAB index array (double, single or integer, 0-based already) as int32."""
    xp = array_module(a)
    a = xp.asarray(a)
    if a.dtype.kind == "f" and a.size and not bool((a == xp.round(a)).all()):
        raise ValueError("an index array holds non-integer values")
    return a.astype(np.int32)


def _f32(a):
    return array_module(a).asarray(a, dtype=np.float32)


def _bool(a):
    return array_module(a).asarray(a, dtype=bool)


def _f64_3d(a):
    """float64 with MATLAB's dropped trailing singleton dimensions restored to 3."""
    a = array_module(a).asarray(a, dtype=np.float64)
    return a.reshape(a.shape + (1,) * (3 - a.ndim))


def _col(a):
    """MATLAB column vector (n, 1)."""
    return a.reshape(-1, 1)


def mex_thspkpc(Params, dataRAW, wPCA, iC):
    """``[uS, idchan] = mexThSpkPC(Params, dataRAW, wPCA, iC-1)``; idchan 0-based as the mex."""
    data = _f32(dataRAW)
    _expect(Params, 1, "NT", data.shape[0])
    _expect(Params, 2, "Nchan", data.shape[1])
    _expect(Params, 3, "NchanNear", np.shape(iC)[0])
    _expect(Params, 4, "nt0", np.shape(wPCA)[0])
    _expect(Params, 7, "NrankPC", np.shape(wPCA)[1])
    res = threshold_spike_pcs(data=data, wpca=_f32(wPCA), iC=_idx(iC),
                              nt0min=int(params_entry(Params, 5, "nt0min")),
                              spk_th=params_entry(Params, 6, "spkTh"))
    return [res.features, _col(res.channels)]


def mex_clustering2(Params, uproj, W, mu, call, iMatch, iC):
    """``[dWU, iclust, dx, nsp, dV] = mexClustering2(Params, uproj, W, mu, call-1, iMatch, iC-1)``."""
    _expect(Params, 1, "Nspikes", np.shape(uproj)[1])
    _expect(Params, 3, "Nfilt", np.shape(W)[1])
    _expect(Params, 7, "NchanNear", np.shape(iC)[0])
    _expect(Params, 8, "Nchan", np.shape(iC)[1])
    res = cluster_projections(uproj=_f32(uproj), W=_f32(W), mu=_f32(mu).ravel(),
                              call=_idx(call).ravel(), iMatch=_bool(iMatch),
                              iC=_idx(iC), lam=params_entry(Params, 6, "lam"), return_costs=True)
    return [res.dWU, _col(res.iclust), _col(res.dx), _col(res.nsp), res.dV]


def mex_distances2(Params, Ws, W, iMatch, iC, Whs, mus, mu):
    """``[iclust, ds] = mexDistances2(Params, Ws, W, iMatch, iC-1, Whs-1, mus, mu)``."""
    _expect(Params, 1, "Ntot", np.size(mus))
    res = template_distances(Ws=_f32(Ws), W=_f32(W), iMatch=_bool(iMatch),
                             iC=_idx(iC), Wh=_idx(Whs), mus=_f32(mus), mu=_f32(mu).ravel())
    return [_col(res.iclust.ravel(order="F")), _col(res.ds.ravel(order="F"))]


def mex_getspikes2(Params, data, wTEMP, iC):
    """``[dWU, cmap] = mexGetSpikes2(Params, data, wTEMP, iC-1)``."""
    data = _f32(data)
    _expect(Params, 1, "NT", data.shape[0])
    _expect(Params, 5, "nt0", np.shape(wTEMP)[0])
    _expect(Params, 10, "Nchan", data.shape[1])
    _expect(Params, 11, "NchanNear", np.shape(iC)[0])
    _expect(Params, 15, "NrankPC", np.shape(wTEMP)[1])
    res = detect_new_spikes(data, templates=_f32(wTEMP), iC=_idx(iC),
                            th=params_entry(Params, 3, "Th"),
                            n_sum=int(params_entry(Params, 14, "Nsum")))
    return [res.snippets, res.cmap]


def mex_svdsmall2(Params, dWU, W, iC, iW, Ka, Kb):
    """``[W, U, mu] = mexSVDsmall2(Params, dWU, W, iC-1, iW-1, Ka, Kb)``."""
    dWU, W = _f64_3d(dWU), _f64_3d(W)
    _expect(Params, 2, "Nfilt", dWU.shape[2])
    _expect(Params, 5, "nt0", dWU.shape[0])
    _expect(Params, 7, "Nrank", W.shape[2])
    _expect(Params, 10, "Nchan", dWU.shape[1])
    res = template_svd(dWU, W, iC=_idx(iC), iW=_idx(iW).ravel(), Ka=Ka, Kb=Kb,
                       nt0min=int(params_entry(Params, 12, "nt0min")))
    return [res.W, res.U, _col(res.mu)]


def mex_mpnu8(Params, dataRAW, U, W, mu, iC, iW, UtU, iList, wPCA):
    """``[st0, id0, x0, featW, dWU0, drez, nsp0, featPC, vexp, errmsg] = mexMPnu8(...)``."""
    data = _f32(dataRAW)
    U, W = _f32(U), _f32(W)
    _expect(Params, 1, "NT", data.shape[0])
    _expect(Params, 2, "Nfilt", W.shape[1])
    _expect(Params, 5, "nt0", W.shape[0])
    _expect(Params, 10, "Nchan", data.shape[1])
    _expect(Params, 11, "NchanNear", np.shape(iC)[0])
    flag = params_entry(Params, 13, "feature flag")
    # without template features the mex never reads iList (learnTemplates passes a stale one)
    res = match_templates(
        data, U=U, W=W, mu=_f32(mu).ravel(), iC=_idx(iC), iW=_idx(iW).ravel(),
        UtU=_bool(UtU), iList=_idx(iList) if flag > 1 else None, wPCA=_f32(wPCA),
        th=params_entry(Params, 3, "Th"), n_rounds=int(params_entry(Params, 4, "nInnerIter")),
        lam=params_entry(Params, 8, "lam"), th_average=params_entry(Params, 16, "Th average"),
        template_features=flag > 1, pc_features=flag > 0,
        stable_mode=params_entry(Params, 17, "useStableMode") > 0)
    featW = res.template_features
    if flag <= 1:  # the mex returns Nnearest = Params(6) rows of zeros
        xp = array_module(data)
        featW = xp.zeros((int(params_entry(Params, 6, "Nnearest")), res.st.size), np.float32)
    return [_col(res.st), _col(res.template), _col(res.amplitude), featW,
            res.dWU, res.residual, _col(res.nsp), res.pc_features, _col(res.vexp),
            np.zeros((1, 1))]  # errmsg: stable mode is always available here


def mex_wtw2(Params, W1, W2, UtU):
    """``wtw0 = mexWtW2(Params, W1, W2, UtU)``."""
    _expect(Params, 2, "Nfilt", np.shape(W1)[1])
    _expect(Params, 10, "nt0", np.shape(W1)[0])
    return [template_cross_correlations(W1=_f32(W1), W2=_f32(W2), UtU=_f32(UtU))]


# spikedetector3 returns at most this many spikes per call (the original's maxFR)
SPIKEDETECTOR3_MAX_SPIKES = ORIGINAL_MAX_SPIKES


def mex_spikedetector3(Params, dataRAW, wTEMP, iC, dist, v2, iC2, dist2):
    """``[dout, kkmax, st, cF] = spikedetector3(Params, dataRAW, wTEMP, iC-1, dist, v2, iC2-1,
    dist2)`` (Kilosort 2.5, standalone_detector.m); Params = [NT Nchan nt0 NchanNear NrankPC
    nt0min spkTh NchanUp NchanNearUp sig].

    dout (NT, NchanUp) single, kkmax (NT, NchanUp) int32, st (4, n) int32 with rows [time;
    centre; amplitude; kkmax] (0-based), cF (NchanNear, n) single. Like the original, at most
    maxFR = 10000 spikes are returned; the original keeps whichever its atomicAdd served first
    (an arbitrary subset, in an arbitrary order), this keeps the first in (time, centre) order and
    returns them in that order.
    """
    data = _f32(dataRAW)
    _expect(Params, 1, "NT", data.shape[0])
    _expect(Params, 2, "Nchan", data.shape[1])
    _expect(Params, 3, "nt0", np.shape(wTEMP)[0])
    _expect(Params, 4, "NchanNear", np.shape(iC)[0])
    _expect(Params, 5, "NrankPC", np.shape(wTEMP)[1])
    _expect(Params, 8, "NchanUp", np.shape(iC)[1])
    _expect(Params, 9, "NchanNearUp", np.shape(iC2)[0])
    res = detect_generic_spikes(
        data, templates=wTEMP, iC=_idx(iC), dist=dist, v2=v2, iC2=_idx(iC2), dist2=dist2,
        nt0min=int(params_entry(Params, 6, "nt0min")), spk_th=params_entry(Params, 7, "spkTh"),
        sig=params_entry(Params, 10, "sig"), max_spikes=SPIKEDETECTOR3_MAX_SPIKES)
    xp = array_module(res.dout)
    st = xp.stack([res.times, res.centres, res.amplitudes, res.kk]).astype(np.int32)
    return [res.dout, res.kkmax, st, res.features]


MEX_FUNCTIONS: dict[str, Callable] = {
    "mexThSpkPC": mex_thspkpc, "mexClustering2": mex_clustering2,
    "mexDistances2": mex_distances2, "mexGetSpikes2": mex_getspikes2,
    "mexSVDsmall2": mex_svdsmall2, "mexMPnu8": mex_mpnu8, "mexWtW2": mex_wtw2,
}
# Kilosort 2.5's mex files that call_mex also answers (apart: the Kilosort2 pipeline and its
# captured calls cover exactly MEX_FUNCTIONS)
KS25_MEX_FUNCTIONS: dict[str, Callable] = {"spikedetector3": mex_spikedetector3}


def call_mex(name: str, args: Sequence, *, device: str = "cpu") -> list:
    """Outputs of mex ``name`` (e.g. ``'mexMPnu8'``) for MATLAB-convention ``args`` (Params first).

    device: 'cpu' runs the numba twins; 'cuda' copies the arrays (all but Params) to the GPU and
    runs the CUDA kernels, returning CuPy arrays.
    """
    known = {**MEX_FUNCTIONS, **KS25_MEX_FUNCTIONS}
    try:
        func = known[name]
    except KeyError:
        raise ValueError(f"unknown mex {name!r}; known: {', '.join(known)}") from None
    if device == "cuda":
        import cupy

        args = [args[0]] + [cupy.asarray(a) for a in args[1:]]
    elif device != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return func(*args)


def array_digest(a) -> str:
    """sha256 of an array's dtype, shape and values in MATLAB (column-major) order."""
    import hashlib

    a = np.asarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.asfortranarray(a).tobytes(order="F"))
    return h.hexdigest()
