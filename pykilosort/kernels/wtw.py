"""template_cross_correlations: temporal cross-correlations of template components at every lag.

The semantics of Kilosort2's mexWtW2, which getMeWtW.m calls once per pair of ranks (i, j) with
``W(:,:,i), W(:,:,j)`` and the spatial products ``U(:,:,i)' * U(:,:,j)`` and sums the results;
the maximum over lags is then the similarity of two templates at their best alignment.
``accumulate=True`` adds into ``out`` in place, so getMeWtW's sum of Nrank^2 terms needs no
(Nfilt, Nfilt, 2*nt0-1) temporary per term (the rounding is the same as MATLAB's WtW + wtw0).
"""
from __future__ import annotations

import numba
import numpy as np

from ..backend import array_module
from .registry import cuda_module, dispatch, register

__all__ = ["template_cross_correlations"]

_TILE = 32        # CUDA block edge (filters per block side); shrunk for very long templates
_NT0_MAX = 81     # default shared-memory capacity of cuda/wtw.cu, in samples per template
_SHARED_BYTES = 48 * 1024  # static shared memory a block may use


def template_cross_correlations(*, W1, W2, UtU, out=None, accumulate: bool = False):
    """``wtw0 = mexWtW2([1 Nfilt 0 0 0 0 0 0 0 nt0], W1, W2, UtU)``: for every lag l,

    ``out[a, b, l] = UtU[a, b] * sum_t W1[t, a] * W2[t + nt0-1-l, b]`` (t over the overlap,
    increasing; float32). Lag l = nt0-1 is the zero shift (getMeWtW2's W1' * W2 .* UtU).

    Args:
        W1, W2: (nt0, Nfilt) temporal components (MATLAB W(:,:,i), W(:,:,j)); cast to float32.
            numpy runs the numba twin, cupy the CUDA kernel.
        UtU: (Nfilt, Nfilt) spatial products (U(:,:,i)' * U(:,:,j)); cast to float32.
        out: optional (Nfilt, Nfilt, 2*nt0-1) float32 Fortran-ordered array to write into.
        accumulate: add the result to ``out`` (required then) instead of overwriting it.

    Returns:
        (Nfilt, Nfilt, 2*nt0-1) float32 Fortran-ordered array on W1's device (``out`` if given).
    """
    xp = array_module(W1)
    W1, W2, UtU = (xp.asarray(v, dtype=xp.float32) for v in (W1, W2, UtU))
    if W1.ndim != 2 or W1.shape != W2.shape or W1.shape[0] < 1:
        raise ValueError(f"W1 and W2 must both be (nt0, Nfilt) with nt0 >= 1, got {W1.shape} and {W2.shape}")
    nt0, nfilt = W1.shape
    if UtU.shape != (nfilt, nfilt):
        raise ValueError(f"UtU must be (Nfilt, Nfilt) = ({nfilt}, {nfilt}), got {UtU.shape}")
    shape = (nfilt, nfilt, 2 * nt0 - 1)
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True adds into out: pass out")
        out = xp.empty(shape, xp.float32, order="F")
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.f_contiguous:
        raise ValueError(f"out must be a Fortran-ordered float32 array of shape {shape}")
    elif array_module(out) is not xp:
        raise ValueError(f"out must be on W1's device ({xp.__name__} array)")
    if out.size:
        dispatch("template_cross_correlations", W1)(W1, W2, UtU, bool(accumulate), out)
    return out


# ------------------------------------------------------------------------------ CPU (numba)
@numba.njit(cache=True, nogil=True)
def _lag_sum(W1c, w2, shift, acc):
    """acc[a] = sum over the overlap of W1c[t, a] * w2[t + shift], t increasing, float32.

    Vectorised over the filters a; four samples per pass over acc (added one after another, so
    each pair's order is unchanged) cut its loads and stores fourfold."""
    nt0, nfilt = W1c.shape
    acc[:] = 0
    t = max(0, -shift)
    t_end = min(nt0, nt0 - shift)
    while t + 4 <= t_end:
        v0, v1, v2, v3 = w2[t + shift], w2[t + 1 + shift], w2[t + 2 + shift], w2[t + 3 + shift]
        r0, r1, r2, r3 = W1c[t], W1c[t + 1], W1c[t + 2], W1c[t + 3]
        for a in range(nfilt):
            acc[a] = (((acc[a] + r0[a] * v0) + r1[a] * v1) + r2[a] * v2) + r3[a] * v3
        t += 4
    for t in range(t, t_end):
        v = w2[t + shift]
        r = W1c[t]
        for a in range(nfilt):
            acc[a] += r[a] * v


@numba.njit(parallel=True, cache=True, nogil=True)
def _wtw_twin(W1c, W2T, UtUT, accumulate, outT):
    """C-ordered arguments: W1c (nt0, Nfilt) = W1 (one sample of all filters contiguous);
    W2T (Nfilt, nt0) = W2'; UtUT (Nfilt, Nfilt) = UtU'; outT (2*nt0-1, Nfilt, Nfilt) = out's
    transpose, outT[lag, b, a] = out[a, b, lag]. One filter b per parallel work item."""
    nt0, nfilt = W1c.shape
    for b in numba.prange(nfilt):
        acc = np.empty(nfilt, np.float32)
        u = UtUT[b]
        for lag in range(2 * nt0 - 1):
            _lag_sum(W1c, W2T[b], nt0 - 1 - lag, acc)
            o = outT[lag, b]
            if accumulate:
                for a in range(nfilt):
                    o[a] += acc[a] * u[a]
            else:
                for a in range(nfilt):
                    o[a] = acc[a] * u[a]


@register("template_cross_correlations", "cpu")
def _wtw_cpu(W1, W2, UtU, accumulate, out):
    # the transposes are C-ordered whatever the shapes: one numba specialisation
    _wtw_twin(np.ascontiguousarray(W1), np.ascontiguousarray(W2.T), np.ascontiguousarray(UtU.T),
              accumulate, out.T)


# ------------------------------------------------------------------------------ CUDA (CuPy)
def _launch_config(nt0):
    """(tile, nt0 capacity): the default 32 x 32 block with room for 81 samples, halving the
    tile until both (tile, nt0) shared arrays fit for longer templates."""
    nt0_max = max(_NT0_MAX, nt0)
    tile = _TILE
    while tile > 1 and 2 * tile * nt0_max * 4 > _SHARED_BYTES:
        tile //= 2
    if 2 * tile * nt0_max * 4 > _SHARED_BYTES:
        raise ValueError(f"nt0={nt0} samples is too long for the CUDA kernel's shared memory")
    return tile, nt0_max


@register("template_cross_correlations", "cuda")
def _wtw_cuda(W1, W2, UtU, accumulate, out):
    import cupy

    nt0, nfilt = W1.shape
    tile, nt0_max = _launch_config(nt0)
    kernel = cuda_module("wtw.cu", (("WTW_TILE", tile), ("WTW_NT0_MAX", nt0_max))) \
        .get_function("wtw_cross_correlations")
    blocks = (nfilt + tile - 1) // tile
    kernel((blocks, blocks), (tile, tile), (
        cupy.asfortranarray(W1), cupy.asfortranarray(W2), cupy.asfortranarray(UtU), out,
        np.int32(nt0), np.int64(nfilt), np.int32(accumulate)))
