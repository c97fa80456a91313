"""Nearest channels and their Gaussian distance mask (getClosestChannels.m of Kilosort2 v2.0)."""
from __future__ import annotations

import numpy as np

__all__ = ["get_closest_channels", "channel_distances"]

_MASK_NORM_EPS = 1e-3  # added to the squared column norm before the mask is unit-normalised


def channel_distances(xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """(Nchan, Nchan) float64 Euclidean distances between channel positions."""
    xc = np.asarray(xc, dtype=np.float64).ravel()
    yc = np.asarray(yc, dtype=np.float64).ravel()
    if xc.shape != yc.shape:
        raise ValueError(f"xc has {xc.size} channels but yc has {yc.size}")
    return np.sqrt((xc[:, None] - xc[None, :]) ** 2 + (yc[:, None] - yc[None, :]) ** 2)


def get_closest_channels(*, xc: np.ndarray, yc: np.ndarray, sigma_mask: float, n_closest: int):
    """The ``n_closest`` nearest channels to every channel and a Gaussian mask over them.

    xc, yc: (Nchan,) channel positions (rez.xc, rez.yc); sigma_mask: ops.sigmaMask (um);
    n_closest: NchanClosest (the callers pass min(Nchan, 32)).

    Returns (iC, mask, C2C), Fortran-ordered like MATLAB's arrays:
      iC:   (n_closest, Nchan) int64, 0-based; column j lists channels by increasing distance
            from channel j, ties in channel order (MATLAB's stable sort), so iC[0, j] == j
            unless an earlier channel sits at the same position. MATLAB iC (int32) = ours + 1.
      mask: (n_closest, Nchan) float32, exp(-d^2 / (2 sigma^2)) over the distances d of column
            j, divided by sqrt(1e-3 + sum of its squares): close to, not exactly, unit norm, so
            the channel itself gets slightly less than 1. Computed in float64, then single.
      C2C:  (Nchan, Nchan) float64 distances (symmetric).
    """
    C2C = channel_distances(xc, yc)
    nchan = C2C.shape[0]
    if not 1 <= n_closest <= nchan:
        raise ValueError(f"n_closest={n_closest} must be between 1 and the {nchan} channels")
    # each column of C2C is that channel's distances to all others; sort each column
    iC = np.argsort(C2C, axis=0, kind="stable")[:n_closest]
    dist = np.take_along_axis(C2C, iC, axis=0)
    mask = np.exp(-dist ** 2 / (2 * sigma_mask ** 2))
    mask = mask / (_MASK_NORM_EPS + np.sum(mask ** 2, axis=0)) ** 0.5
    return (np.asfortranarray(iC, dtype=np.int64), np.asfortranarray(mask, dtype=np.float32),
            np.asfortranarray(C2C))
