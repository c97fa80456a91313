"""Kilosort 2.5's drift correction (datashift2), piece by piece (issue 11; not yet a pipeline step).

Here: the registration of one batch, shift_batch_on_disk2.m and kernel2D.m of v2.5.2. Each channel's
depth is moved by its interpolated drift; the batch is re-sampled at the moved positions with a
kernel-regression (kriging) matrix built from a Laplacian kernel of the channel positions; the first
ntbuff samples of a batch are cross-faded with the tail the previous batch computed for them.
"""
from __future__ import annotations

import logging

import numpy as np

from .makima import makima

logger = logging.getLogger("pykilosort")

__all__ = ["kernel2d", "shift_matrix", "shift_batch", "flush_subnormals", "my_conv2",
           "align_block2", "drift_histograms"]

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


def flush_subnormals(M):
    """M (float32, numpy or cupy) with its subnormal entries (|m| < 1.2e-38) set to 0, a copy.

    Why: the kriging weights of channels far apart are exp(-distance / sig) solved through
    Kxx, down to 1e-73; in float32 a band of them (about 14% of M at 384 channels) is subnormal,
    and a CPU multiplies subnormals some 40x slower: the product of a 384-channel batch took 5 s
    instead of 0.13 s (benchmarks/results/README.md). Such a weight times an int16 sample is
    < 4e-34, below half a unit in the last place of any partial sum the int16 result depends on.
    """
    from .backend import array_module

    xp = array_module(M)
    return xp.where(xp.abs(M) < np.finfo(np.float32).tiny, xp.float32(0), M)


def shift_batch(*, batch, M, dprev, NT: int, ntbuff: int):
    """One batch through M, in float32 as the original's GPU product ``single(dat) * M'``.

    batch: (NT + ntbuff, Nchan) int16 proc samples (NT rows for the last batch), numpy or cupy.
    M: (Nchan, Nchan) float32 on batch's device.
    dprev: (ntbuff, Nchan) float32 tail of the previous batch, faded out over the first ntbuff
        samples (the original passes zeros for the first batch); None: no cross-fade.
    Returns the shifted (NT, Nchan) int16 batch and the tail (ntbuff, Nchan) for the next batch
    (None after a last batch without one), on batch's device.
    """
    from .backend import array_module
    from .kernels import round_int16

    xp = array_module(batch)
    dati = batch.astype(xp.float32) @ flush_subnormals(xp.asarray(M, dtype=xp.float32)).T
    if dprev is not None:
        # MATLAB: w_edge and 1 - w_edge are double, each rounded to single in the product
        w64 = np.linspace(0, 1, ntbuff)[:, None]
        w, wc = xp.asarray(w64.astype(np.float32)), xp.asarray((1 - w64).astype(np.float32))
        dati[:ntbuff] = w * dati[:ntbuff] + wc * xp.asarray(dprev, dtype=xp.float32)
    tail = dati[NT:NT + ntbuff].copy() if dati.shape[0] == NT + ntbuff else None
    return round_int16(xp.ascontiguousarray(dati[:NT])), tail


# ---------------------------------------------------------------------- spike histograms
_DEPTH_BIN = 5.0       # datashift2: dd = 5 um
_AMP_BINS = 20         # log-spaced amplitude bins between spkTh and 100
_AMP_CAP = 99.0        # amplitudes above are counted in the top bin (min(99, amp))


def drift_histograms(*, depths, amplitudes, batches, n_batches: int, ymin: float,
                     spk_th: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """datashift2's per-batch spike histograms: F (n_depth_bins, 20, n_batches) log2(1 + counts)
    of spikes by depth (5 um bins from ymin - 1) and log amplitude (20 bins from spk_th to 100),
    and ysamp (n_depth_bins,) the bin centres (um).

    depths (n,) um, amplitudes (n,) >= spk_th (the detector's), batches (n,) 0-based batch ids.
    """
    depths = np.asarray(depths, np.float64)
    amplitudes = np.asarray(amplitudes, np.float64)
    batches = np.asarray(batches, np.int64)
    if np.any(amplitudes < spk_th):
        raise ValueError(f"drift_histograms: amplitudes below spk_th={spk_th} have no bin")
    dmin = ymin - 1
    dep = depths - dmin
    n_bins = 1 + int(np.ceil(dep.max() / _DEPTH_BIN))
    amp = (np.log10(np.minimum(_AMP_CAP, amplitudes)) - np.log10(spk_th)) / (2 - np.log10(spk_th))
    row = np.ceil(dep / _DEPTH_BIN).astype(np.int64) - 1        # sparse(ceil(dep/dd), ...)
    col = np.ceil(1e-5 + amp * _AMP_BINS).astype(np.int64) - 1  # ceil(1e-5 + amp * 20)
    counts = np.zeros((n_bins, _AMP_BINS, n_batches))
    np.add.at(counts, (row, col, batches), 1.0)
    ysamp = dmin + _DEPTH_BIN * np.arange(1, n_bins + 1) - _DEPTH_BIN / 2
    return np.log2(1 + counts), ysamp


# ---------------------------------------------------------------------- align_block2
_RIGID_RANGE, _RIGID_ITERS = 15, 10  # align_block2: +-15 depth bins, 10 iterations
_BLOCK_RANGE, _UPSAMPLE = 5, 10      # +-5 bins per block, kriging-upsampled to 0.1 bin
_SMOOTH_SIG = 0.5                    # my_conv2(dcs, .5, [1, 2, 3])


def my_conv2(x: np.ndarray, sig: float, axes) -> np.ndarray:
    """my_conv2: Gaussian smoothing (taps +-ceil(4 sig)) along each of ``axes`` in turn, with
    zero padding renormalised by the kernel mass inside the array; sig <= 0.25 leaves x as is."""
    import scipy.ndimage

    x = np.asarray(x, np.float64)
    if sig <= 0.25:
        return x
    tmax = int(np.ceil(4 * sig))
    g = np.exp(-np.arange(-tmax, tmax + 1) ** 2 / (2 * sig ** 2))
    g /= g.sum()
    for axis in axes:
        norm = scipy.ndimage.correlate1d(np.ones(x.shape[axis]), g, mode="constant")
        shape = [1] * x.ndim
        shape[axis] = -1
        x = scipy.ndimage.correlate1d(x, g, axis=axis, mode="constant") / norm.reshape(shape)
    return x


def _xcorr_by_shift(F: np.ndarray, F0: np.ndarray, shifts) -> np.ndarray:
    """(len(shifts), Nbatches): mean over bins of circshift(F, s, 1) .* F0, in single precision."""
    return np.stack([(np.roll(F, s, axis=0) * F0[:, :, None]).mean(axis=0, dtype=np.float32)
                     .mean(axis=0, dtype=np.float32) for s in shifts])


def _shift_batches(F: np.ndarray, shift_of_batch: np.ndarray, shifts) -> np.ndarray:
    """circshift each batch of F (bins, amps, batches) by its shift, for the shifts listed only."""
    F = F.copy()
    for s in shifts:
        ib = shift_of_batch == s
        F[:, :, ib] = np.roll(F[:, :, ib], s, axis=0)
    return F


def first_target(Fg: np.ndarray, *, avoid_jumps: bool) -> int:
    """The batch align_block2 registers to first: the original's min(300, floor(Nbatches/2))
    (1-based). With ``avoid_jumps``, when that batch differs from its neighbours far more than
    batches usually do (score < 0.75 x the median; score: the lower of its correlations with the
    previous and the next batch), the nearest batch scoring at least the median instead.

    Why: a batch during which the probe jumps holds the units at two depths; registered to it,
    the two positions both align at shift 0 and the whole estimate fails (measured on a
    SpikeInterface 'bump' recording whose middle batch straddles a 30 um step: drift r -0.12
    against the imposed motion, 0.93 with this choice; benchmarks/results/README.md)."""
    nb = Fg.shape[2]
    middle = min(300, nb // 2) - 1
    if not avoid_jumps or nb < 3:
        return middle
    X = Fg.reshape(-1, nb).astype(np.float64)
    X = X / np.maximum(np.linalg.norm(X, axis=0), 1e-12)
    c = (X[:, 1:] * X[:, :-1]).sum(axis=0)  # c[t - 1] = corr(batch t, batch t - 1)
    score = np.minimum(np.r_[c[0], c], np.r_[c, c[-1]])
    typical = np.median(score)
    if score[middle] >= 0.75 * typical:
        return middle
    order = np.argsort(np.abs(np.arange(nb) - middle), kind="stable")  # nearest first, earlier
    chosen = int(next(t for t in order if score[t] >= typical))
    logger.info("datashift: batch %d (the original's first target) straddles a jump (correlation "
                "with its neighbours %.2f, typical %.2f); registering to batch %d first",
                middle + 1, score[middle], typical, chosen + 1)
    return chosen


def _rigid(Fg: np.ndarray, *, avoid_jumps: bool) -> tuple[np.ndarray, np.ndarray]:
    """align_block2's iterative rigid registration by integer bin shifts: (dall (10, Nbatches)
    shifts per iteration, the last row left 0; Fg aligned by all but the last)."""
    nb = Fg.shape[2]
    dt = np.arange(-_RIGID_RANGE, _RIGID_RANGE + 1)
    F0 = Fg[:, :, first_target(Fg, avoid_jumps=avoid_jumps)]  # a single batch as the first target
    dall = np.zeros((_RIGID_ITERS, nb))
    for it in range(_RIGID_ITERS - 1):  # the last iteration's estimate is never used
        best = dt[np.argmax(_xcorr_by_shift(Fg, F0, dt), axis=0)]
        Fg = _shift_batches(Fg, best, dt)
        dall[it] = best
        F0 = Fg.mean(axis=2, dtype=np.float32)
    return dall, Fg


def _block_ranges(n_bins: int, nblocks: int) -> list[slice]:
    """2*nblocks-1 overlapping blocks of floor(n_bins/nblocks) bins, evenly spread."""
    width = n_bins // nblocks - 1
    first = np.floor(np.linspace(1, n_bins - width, 2 * nblocks - 1) + 0.5).astype(int)  # round
    return [slice(f - 1, f + width) for f in first]


def align_block2(*, F: np.ndarray, ysamp: np.ndarray, nblocks: int, avoid_jumps: bool = False):
    """Drift estimate from per-batch spike histograms (align_block2.m of v2.5.2).

    F: (n_depth_bins, n_amplitude_bins, Nbatches) counts; ysamp (n_depth_bins,) bin depths (um);
    nblocks: 1 rigid, > 1 non-rigid (2*nblocks-1 overlapping blocks).
    avoid_jumps: first register to a batch without a jump in it (:func:`first_target`); False:
    the original's middle batch.
    Returns imin (Nbatches, n_blocks) shifts in bins (0.1-bin resolution), yblk (n_blocks,) block
    centres (um), F0 (the mean-subtracted target after rigid alignment), F0m (the raw histograms
    averaged after rigid alignment; batches shifted by more than 5 bins are left unshifted there,
    as in the original).
    """
    if F.ndim != 3 or F.shape[2] < 2:
        raise ValueError(f"align_block2 needs (depth, amplitude, batches >= 2) histograms, got {F.shape}")
    Fg = np.asarray(F, np.float32)
    Fg = Fg - Fg.mean(axis=0, dtype=np.float32)
    dall, Fg = _rigid(Fg, avoid_jumps=avoid_jumps)
    F0 = Fg.mean(axis=2, dtype=np.float32)
    blocks = _block_ranges(F.shape[0], nblocks)
    dt = np.arange(-_BLOCK_RANGE, _BLOCK_RANGE + 1)
    yblk = np.array([np.mean(np.asarray(ysamp, np.float64)[b]) for b in blocks])
    dcs = np.stack([_xcorr_by_shift(Fg[b], F0[b], dt) for b in blocks], axis=2).astype(np.float64)
    dtup = np.linspace(-_BLOCK_RANGE, _BLOCK_RANGE, 2 * _BLOCK_RANGE * _UPSAMPLE + 1)
    K = np.exp(-(dt[:, None] - dtup[None, :]) ** 2 / 2)  # kernelD(dt, dtup, 1)
    dcs = my_conv2(dcs, _SMOOTH_SIG, (0, 1, 2))
    imin = np.empty((F.shape[2], len(blocks)))
    rigid = dall[:-1].sum(axis=0)
    for j in range(len(blocks)):
        imin[:, j] = rigid + dtup[np.argmax(K.T @ dcs[:, :, j], axis=0)]
    F0m = _shift_batches(np.asarray(F, np.float32), rigid, dt).mean(axis=2, dtype=np.float32)
    return imin, yblk, F0, F0m
