"""Kilosort 2.5's drift correction (datashift2), piece by piece (issue 11; not yet a pipeline step).

Here: the registration of one batch, shift_batch_on_disk2.m and kernel2D.m of v2.5.2. Each channel's
depth is moved by its interpolated drift; the batch is re-sampled at the moved positions with a
kernel-regression (kriging) matrix built from a Laplacian kernel of the channel positions; the first
ntbuff samples of a batch are cross-faded with the tail the previous batch computed for them.
"""
from __future__ import annotations

import numpy as np

from .makima import makima

__all__ = ["kernel2d", "shift_matrix", "shift_batch"]

_RIDGE = 0.01       # shift_batch_on_disk2: Kxx + .01 * eye
_SIGMA_Y_FACTOR = 1.5  # kernel2D: sigy = 1.5 * sig


def kernel2d(*, xp: np.ndarray, yp: np.ndarray, sig: float) -> np.ndarray:
    """kernel2D: (n, m) exp(-|dx| / sig - |dy| / (1.5 sig)) between points xp (n, 2) and yp
    (m, 2) (x, y in um; the exponent p = 1: a Laplacian, not a Gaussian kernel)."""
    xp, yp = np.asarray(xp, np.float64), np.asarray(yp, np.float64)
    dx = np.abs(xp[:, 0][:, None] - yp[:, 0][None, :])
    dy = np.abs(xp[:, 1][:, None] - yp[:, 1][None, :])
    return np.exp(-dx / sig - dy / (_SIGMA_Y_FACTOR * sig))


def shift_matrix(*, xc: np.ndarray, yc: np.ndarray, shifts, ysamp, sig: float) -> np.ndarray:
    """M (Nchan, Nchan) with ``dat_shifted = dat @ M.T``: each channel re-sampled at its depth
    minus its drift. ``shifts`` are the drifts (um) at block centres ``ysamp``, interpolated to the
    channels with interp1(..., 'makima', 'extrap') when there are several blocks (rigid: one)."""
    shifts = np.asarray(shifts, np.float64).ravel()
    ysamp = np.asarray(ysamp, np.float64).ravel()
    if shifts.size > 1:
        shifts = makima(x=ysamp, y=shifts, xq=yc)
    xp = np.column_stack([xc, yc]).astype(np.float64)
    moved = xp.copy()
    moved[:, 1] -= shifts
    kxx = kernel2d(xp=xp, yp=xp, sig=sig)
    kyx = kernel2d(xp=moved, yp=xp, sig=sig)
    # MATLAB's Kyx / A solves X A = Kyx: X = (A' \ Kyx')'; A is symmetric
    return np.linalg.solve(kxx + _RIDGE * np.eye(len(xp)), kyx.T).T


def shift_batch(*, batch: np.ndarray, M: np.ndarray, dprev: np.ndarray | None, NT: int,
                ntbuff: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One batch through M, in float32 as the original's GPU product ``single(dat) * M'``.

    batch: (NT + ntbuff, Nchan) int16 proc samples (NT rows for the last batch).
    dprev: (ntbuff, Nchan) float32 tail of the previous batch (zeros for the first).
    Returns the shifted (NT, Nchan) int16 batch and the tail (ntbuff, Nchan) for the next batch
    (None after a last batch without one).
    """
    from .kernels import round_int16

    dati = np.asarray(batch, np.float32) @ np.asarray(M, np.float32).T
    w = np.linspace(0, 1, ntbuff).astype(np.float32)[:, None]  # MATLAB: single .* double -> single
    dati[:ntbuff] = w * dati[:ntbuff] + (1 - w) * np.asarray(dprev, np.float32)
    tail = dati[NT:NT + ntbuff].copy() if dati.shape[0] == NT + ntbuff else None
    return np.asarray(round_int16(np.ascontiguousarray(dati[:NT]))), tail
