"""template_svd: rank-3 spatiotemporal decomposition of the templates (mexSVDsmall2 of Kilosort2).

Each template dWU[:, :, f] (nt0 x Nchan), restricted to the neighbourhood of its best channel, is
decomposed as mu * sum_k W[:, f, k] U[:, f, k]^T by power iterations on its temporal Gram matrix
(warm-started from the previous W), then its temporal components are aligned so that the trough
of the first one sits at a fixed sample, with 1/nup sample resolution (kriging kernels Ka, Kb of
:func:`pykilosort.upsampling.get_kernels`).

Double precision throughout, like the original mex file. The numba twin and the CUDA kernels
(cuda/svdsmall.cu) evaluate every sum in the same order with the same roundings (no FMA), so
they are meant to agree bit for bit with each other, and with the original's arithmetic except
where the original's nvcc build fused multiply-adds.

The original's Params entries come from the arrays or arguments: Params[1] Nfilt = dWU.shape[2],
Params[4] nt0 = dWU.shape[0], Params[6] Nrank = W.shape[2], Params[9] Nchan = dWU.shape[1],
Params[10] NchanNear = iC.shape[0], Params[11] nt0min = nt0min. No other entry is read (the
power-iteration count is a hard-coded 100, not Params[3] nInnerIter).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from ..backend import array_module
from ..errors import ParameterError
from .registry import cuda_module, dispatch, register

__all__ = ["template_svd", "TemplateSVD", "alignment_sample", "N_POWER_ITER"]

N_POWER_ITER = 100  # hard-coded in the original: 99 normalised updates, then one more product
_EPS_NORM = float(np.float32(1e-5))  # the original's single-precision literals, as doubles
_EPS_MU = float(np.float32(1e-7))
_MAX_THREADS = 1024  # threads per CUDA block; svd_power and svd_normalise_align use >= nt0
_MAX_SHARED_DOUBLES = 6144  # 48 KiB of dynamic shared memory, the launch default


class TemplateSVD(NamedTuple):
    """Outputs of :func:`template_svd` (unpacks as ``W, U, mu`` like the mex call)."""
    W: object   # (nt0, Nfilt, nrank) float64, Fortran order
    U: object   # (Nchan, Nfilt, nrank) float64, Fortran order
    mu: object  # (Nfilt,) float64


def alignment_sample(nt0min: int, *, fix_trough_offset: bool = False) -> int:
    """0-based sample where template_svd puts the largest |W[:, f, 0]| before sub-sample alignment.

    The original passes ops.nt0min (MATLAB's 1-based trough sample) in Params and uses it as a
    0-based index: the integer peak lands one sample after the MATLAB trough, while Ka (sliced at
    1-based nt0min) searches for the sub-sample extremum 0.6 to 1.5 samples *before* it.
    fix_trough_offset=True uses nt0min - 1 instead (MATLAB sample nt0min, where Ka looks and where
    the code before February 2019 put it, hard-coded as 19 for nt0min = 20).

    The pipeline keeps the original in both modes: trackAndSort reports a spike at its start +
    nt0min, which is the trough only with the original alignment. Measured on our 32-channel,
    60 s benchmark: fix_trough_offset=True puts the median spike time 1 sample after the true
    trough (0 with the original), with the same share of spikes found.
    """
    return int(nt0min) - 1 if fix_trough_offset else int(nt0min)


def template_svd(dWU, W, *, iC, iW, Ka, Kb, nt0min: int, fix_trough_offset: bool = False,
                 n_iter: int = N_POWER_ITER) -> TemplateSVD:
    """``[W, U, mu] = mexSVDsmall2(Params, dWU, W, iC-1, iW-1, Ka, Kb)``.

    Args (numpy arrays run the numba twin, cupy arrays the CUDA kernels):
        dWU: (nt0, Nchan, Nfilt) float64 templates. Fortran order avoids a copy.
        W: (nt0, Nfilt, nrank) float64 temporal components of the previous call: the power
            iterations' starting vectors (nrank = Params[6] = 3 in the original). Not modified.
        iC: (NchanNear, Nchan) integer, 0-based: column c lists the channels of the neighbourhood
            of channel c (get_closest_channels; MATLAB passes iC-1). Order and repeats do not
            matter: each template keeps the channels iC[:, iW[f]] and is zero elsewhere.
        iW: (Nfilt,) integer, 0-based best channel of each template (MATLAB passes iW-1).
        Ka: (nup, nt0) float64, Kb: (nt0, nt0, nup) float64: get_kernels(nt0=, nt0min=, nup=10).
        nt0min: ops.nt0min (Params[11]), MATLAB's 1-based trough sample; see alignment_sample.
        fix_trough_offset: False reproduces the original; True aligns to MATLAB sample nt0min.
        n_iter: power iterations per component (the original's hard-coded 100).

    Returns:
        TemplateSVD(W, U, mu): W (nt0, Nfilt, nrank) aligned temporal components, unit norm
        before the interpolation, the first one negative at its sub-sample extremum; U (Nchan,
        Nfilt, nrank) spatial components divided by mu, zero outside the neighbourhood (NaN there
        too if W is not finite, as in the original); mu (Nfilt,) = sqrt(1e-7 + sum of the
        squared norms of the undivided U columns) (MATLAB: (Nfilt, 1)).
    """
    xp = array_module(dWU)
    nt0, nchan, nfilt, nrank = _check(dWU, W, iC, iW, Ka, Kb, nt0min, fix_trough_offset, n_iter)
    W_out = xp.array(W, dtype=np.float64, order="F", copy=True)
    U = xp.zeros((nchan, nfilt, nrank), dtype=np.float64, order="F")
    mu = xp.zeros(nfilt, dtype=np.float64)
    if nfilt == 0:
        return TemplateSVD(W_out, U, mu)
    args = (xp.asfortranarray(dWU), W_out, _neighbourhoods(iC, xp),
            xp.asarray(iW, dtype=np.int32), xp.asfortranarray(xp.asarray(Ka, dtype=np.float64)),
            xp.asfortranarray(xp.asarray(Kb, dtype=np.float64)),
            alignment_sample(nt0min, fix_trough_offset=fix_trough_offset), int(n_iter), U, mu)
    dispatch("template_svd", dWU)(*args)
    return TemplateSVD(W_out, U, mu)


def _check(dWU, W, iC, iW, Ka, Kb, nt0min, fix_trough_offset, n_iter):
    """Validate shapes, dtypes and index ranges; returns (nt0, Nchan, Nfilt, nrank)."""
    for name, a in (("dWU", dWU), ("W", W)):
        if a.dtype != np.float64:
            raise TypeError(f"{name} must be float64 (mexSVDsmall2 works in double), got {a.dtype}")
    if dWU.ndim != 3 or W.ndim != 3:
        raise ValueError(f"dWU must be (nt0, Nchan, Nfilt) and W (nt0, Nfilt, nrank), got "
                         f"{dWU.shape} and {W.shape}")
    nt0, nchan, nfilt = dWU.shape
    nrank = W.shape[2]
    if W.shape[:2] != (nt0, nfilt) or nrank < 1 or nt0 < 1:
        raise ValueError(f"W has shape {W.shape}; dWU {dWU.shape} needs ({nt0}, {nfilt}, nrank>=1)")
    nup = Ka.shape[0] if Ka.ndim == 2 else -1
    if Ka.shape != (nup, nt0) or Kb.shape != (nt0, nt0, nup) or nup < 1:
        raise ValueError(f"Ka must be (nup, {nt0}) and Kb ({nt0}, {nt0}, nup), got {Ka.shape} "
                         f"and {Kb.shape} (use upsampling.get_kernels(nt0={nt0}, ...))")
    if iC.ndim != 2 or iC.shape[0] < 1 or iW.shape != (nfilt,):
        raise ValueError(f"iC must be (NchanNear, Nchan) and iW ({nfilt},), got {iC.shape} "
                         f"and {iW.shape}")
    _check_index("iC", iC, nchan, "channels of dWU")
    _check_index("iW", iW, iC.shape[1], "columns of iC")
    peak = alignment_sample(nt0min, fix_trough_offset=fix_trough_offset)
    if not 0 <= peak < nt0:
        raise ParameterError(f"nt0min={nt0min} puts the trough at 0-based sample {peak}, outside "
                             f"the nt0={nt0} samples of a template")
    if n_iter < 1:
        raise ValueError(f"n_iter={n_iter} must be at least 1")
    return nt0, nchan, nfilt, nrank


def _check_index(name, idx, n, what):
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name} must hold integer (0-based) indices, got {idx.dtype}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"{name} holds indices from {int(idx.min())} to {int(idx.max())}, outside "
                         f"0..{n - 1} ({n} {what}); indices are 0-based (MATLAB passes {name}-1)")


def _neighbourhoods(iC, xp):
    """(NchanNear, ncol) int32, Fortran: each column of iC sorted ascending, repeats set to -1.

    Sums over a template's channels then run in ascending channel order, each channel once,
    which is the order (and the value) of the original's sums over all channels of a zeroed copy.
    """
    s = xp.sort(xp.asarray(iC, dtype=np.int32), axis=0)
    repeat = s[1:] == s[:-1]
    s[1:][repeat] = -1
    return xp.asfortranarray(s)


# ------------------------------------------------------------------------------------------
# numba twin: one template per prange iteration; each step mirrors one kernel of svdsmall.cu.

@numba.njit(cache=True, nogil=True)
def _gram(dWU, f, chans, wtw):
    """wtw[i, j] = sum over chans (ascending, -1 skipped) of dWU[i, c, f] dWU[j, c, f]."""
    nt0 = dWU.shape[0]
    for j in range(nt0):  # explicit loops: numba compiles slice assignments slowly
        for i in range(nt0):
            wtw[i, j] = 0.0
    for c in chans:
        if c < 0:
            continue
        for j in range(nt0):  # inner loop over i: vectorises, keeps each (i, j) sum in c order
            b = dWU[j, c, f]
            for i in range(nt0):
                wtw[i, j] += dWU[i, c, f] * b


@numba.njit(cache=True, nogil=True)
def _matvec(a, v, x):
    """x[r] = sum_t a[r, t] v[t], each row summed in t order from 0.0. Vectorised over rows;
    four columns per pass keep x in registers (the same additions in the same order)."""
    n = a.shape[0]
    for r in range(n):
        x[r] = 0.0
    t = 0
    while t + 4 <= n:
        v0, v1, v2, v3 = v[t], v[t + 1], v[t + 2], v[t + 3]
        for r in range(n):
            x[r] = ((((x[r] + a[r, t] * v0) + a[r, t + 1] * v1) + a[r, t + 2] * v2)
                    + a[r, t + 3] * v3)
        t += 4
    for t in range(t, n):
        vt = v[t]
        for r in range(n):
            x[r] += a[r, t] * vt


@numba.njit(cache=True, nogil=True)
def _power(wtw, W, f, n_iter, peak):
    """Power iterations with deflation (svd_power); W[:, f, :] is the start and the result."""
    nt0, nrank = W.shape[0], W.shape[2]
    x = np.empty(nt0)
    v = np.empty(nt0)
    for k in range(nrank):
        for t in range(nt0):
            v[t] = W[t, f, k]
        for it in range(n_iter):
            _matvec(wtw, v, x)
            if it < n_iter - 1:
                s = _EPS_NORM
                for t in range(nt0):
                    s += x[t] * x[t]
                norm = math.sqrt(s)
                for t in range(nt0):
                    v[t] = x[t] / norm
        for t in range(nt0):  # deflate with the last, unnormalised product
            for r in range(nt0):
                wtw[r, t] -= v[t] * x[r]
        for t in range(nt0):
            W[t, f, k] = v[t]
    sgn = math.copysign(1.0, W[peak, f, 0])
    for t in range(nt0):
        W[t, f, 0] = -W[t, f, 0] * sgn


@numba.njit(cache=True, nogil=True)
def _spatial(dWU, W, f, chans, U):
    """U[:, f, k] = W[:, f, k]^T dWU[:, :, f] on chans; +0.0 (NaN if W is not finite) elsewhere."""
    nt0 = dWU.shape[0]
    for k in range(W.shape[2]):
        fill = 0.0
        for t in range(nt0):
            if not np.isfinite(W[t, f, k]):
                fill = np.nan
        for c in range(U.shape[0]):
            U[c, f, k] = fill
        for c in chans:
            if c < 0:
                continue
            x = 0.0
            for t in range(nt0):
                x += W[t, f, k] * dWU[t, c, f]
            U[c, f, k] = x


@numba.njit(cache=True, nogil=True)
def _normalise(U, f):
    """Divide U[:, f, :] by mu = sqrt(1e-7 + sum_k |U[:, f, k]|^2), norms taken one by one."""
    nchan, nrank = U.shape[0], U.shape[2]
    mu = _EPS_MU
    for k in range(nrank):
        x = 0.0
        for c in range(nchan):
            x += U[c, f, k] * U[c, f, k]
        s = math.sqrt(x)
        mu += s * s
    mu = math.sqrt(mu)
    for k in range(nrank):
        for c in range(nchan):
            U[c, f, k] = U[c, f, k] / mu
    return mu


@numba.njit(cache=True, nogil=True)
def _first_abs_max(x):
    """(index, value) of the first strict maximum of |x| above 0; (0, 0.0) if none (or NaN)."""
    best, imax = 0.0, 0
    for i in range(x.size):
        if abs(x[i]) > best:
            best, imax = abs(x[i]), i
    return imax, x[imax]


@numba.njit(cache=True, nogil=True)
def _align(Ka, Kb, W, f, peak):
    """Shift W[:, f, :] so |W[:, f, 0]| peaks at sample peak, then interpolate to the
    sub-sample extremum found with Ka (svd_normalise_align's second half)."""
    nt0, nrank, nup = W.shape[0], W.shape[2], Ka.shape[0]
    imax, _ = _first_abs_max(W[:, f, 0])
    ws = np.empty((nt0, nrank))
    for k in range(nrank):
        for t in range(nt0):
            ws[t, k] = W[(t + imax - peak) % nt0, f, k]
    up = np.zeros(nup)
    for t in range(nt0):
        for a in range(nup):
            up[a] += Ka[a, t] * ws[t, 0]
    iup, upmax = _first_abs_max(up)
    sgn = math.copysign(1.0, upmax) if abs(upmax) > 0 else 1.0
    acc = np.empty(nt0)
    for k in range(nrank):
        for t in range(nt0):
            acc[t] = 0.0
        for s in range(nt0):
            for t in range(nt0):
                acc[t] += Kb[t, s, iup] * ws[s, k]
        for t in range(nt0):
            W[t, f, k] = -acc[t] * sgn if k == 0 else acc[t]


@numba.njit(cache=True, nogil=True)
def _one_template(dWU, W, nbr, iW, Ka, Kb, peak, n_iter, U, mu, f):
    """The four CUDA kernels' work for template f: W[:, f], U[:, f] and mu[f] in place."""
    nt0 = dWU.shape[0]
    chans = nbr[:, iW[f]]
    wtw = np.empty((nt0, nt0), dtype=np.float64).T  # Fortran: columns contiguous
    _gram(dWU, f, chans, wtw)
    _power(wtw, W, f, n_iter, peak)
    _spatial(dWU, W, f, chans, U)
    mu[f] = _normalise(U, f)
    _align(Ka, Kb, W, f, peak)


@numba.njit(parallel=True, cache=True, nogil=True)
def _svd_twin(dWU, W, nbr, iW, Ka, Kb, peak, n_iter, U, mu):
    # templates are independent: each iteration writes only W[:, f], U[:, f] and mu[f]. The
    # index is cast because prange makes it unsigned, which would compile everything twice.
    for f in numba.prange(dWU.shape[2]):
        _one_template(dWU, W, nbr, iW, Ka, Kb, peak, n_iter, U, mu, np.int64(f))


@register("template_svd", "cpu")
def _template_svd_cpu(dWU, W, nbr, iW, Ka, Kb, peak, n_iter, U, mu):
    _svd_twin(dWU, W, nbr, iW, Ka, Kb, np.int64(peak), np.int64(n_iter), U, mu)


# ------------------------------------------------------------------------------------------
# CUDA

def _round_warp(n: int) -> int:
    return max(32, (n + 31) // 32 * 32)


def cuda_launch_geometry(*, nt0: int, nrank: int, nup: int) -> dict:
    """Threads per block and dynamic shared bytes of each kernel; ParameterError past the limits."""
    threads = _round_warp(max(nt0, nup, nrank))
    shared = nt0 * nrank + nup + nrank + 1
    if threads > _MAX_THREADS:
        raise ParameterError(f"nt0={nt0} (or nup={nup}) exceeds the {_MAX_THREADS} threads of a "
                             "CUDA block that template_svd uses per template; use a shorter nt0 "
                             "or the CPU (device='cpu')")
    if shared > _MAX_SHARED_DOUBLES:
        raise ParameterError(f"nt0={nt0} x nrank={nrank} needs {8 * shared} bytes of shared "
                             f"memory per block, over {8 * _MAX_SHARED_DOUBLES}; use a shorter "
                             "nt0 or the CPU (device='cpu')")
    return {"gram": 256, "spatial": 256, "power": _round_warp(nt0),
            "power_shared": 8 * (nt0 * nrank + 1), "normalise": threads,
            "normalise_shared": 8 * shared}


@register("template_svd", "cuda")
def _template_svd_cuda(dWU, W, nbr, iW, Ka, Kb, peak, n_iter, U, mu):
    import cupy

    nt0, nchan, nfilt = dWU.shape
    nrank, nup, nnear = W.shape[2], Ka.shape[0], nbr.shape[0]
    geo = cuda_launch_geometry(nt0=nt0, nrank=nrank, nup=nup)
    module = cuda_module("svdsmall.cu")
    i32 = np.int32
    wtw = cupy.empty((nt0, nt0, nfilt), dtype=np.float64, order="F")
    grid = (nfilt,)
    module.get_function("svd_wtw")(grid, (geo["gram"],), (
        dWU, nbr, iW, wtw, i32(nt0), i32(nchan), i32(nnear)))
    module.get_function("svd_power")(grid, (geo["power"],), (
        wtw, W, i32(nt0), i32(nfilt), i32(nrank), i32(n_iter), i32(peak)),
        shared_mem=geo["power_shared"])
    module.get_function("svd_spatial")(grid, (geo["spatial"],), (
        dWU, W, nbr, iW, U, i32(nt0), i32(nchan), i32(nfilt), i32(nrank), i32(nnear)))
    module.get_function("svd_normalise_align")(grid, (geo["normalise"],), (
        Ka, Kb, W, U, mu, i32(nt0), i32(nchan), i32(nfilt), i32(nrank), i32(nup), i32(peak)),
        shared_mem=geo["normalise_shared"])
