"""Reading the proc file: the whitened int16 batches written by preprocessing.

Every step after preprocessing (batch reordering, template learning, spike extraction) reads
batches through :func:`proc_batch_reader`, which knows both layouts: Kilosort2's time-fastest
blocks and Kilosort 2.5's channel-fastest ones.
"""
from __future__ import annotations

import numba
import numpy as np

from .errors import DataQualityError

__all__ = ["proc_batch_reader", "proc_sample_reader", "unscaled"]


def unscaled(block: np.ndarray, scaleproc: float) -> np.ndarray:
    """single(block) / scaleproc: an (n, Nchan) int16 batch of the proc file as the float32
    Fortran (n, Nchan) array the kernels take (the division in float32, as numpy and MATLAB
    do). One parallel pass instead of a cast, a Fortran copy and a division (0.1 s a batch at
    384 channels)."""
    out = np.empty(block.shape, np.float32, order="F")
    _unscale_twin(block, np.float32(scaleproc), out)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _unscale_twin(block, scale, out):
    for c in numba.prange(block.shape[1]):
        for t in range(block.shape[0]):
            out[t, c] = np.float32(block[t, c]) / scale


def proc_batch_reader(ctx):
    """``read(ibatch) -> (NT, Nchan) int16`` over the proc file of ``ctx`` (either layout).

    Plain reads, not a memory map: pages of a mapped file count in the resident memory of the
    process until reclaimed, which would make memory look like it grows with recording length.
    """
    nt, nchan = int(ctx.params.NT), ctx.probe_good.Nchan
    path = ctx.intermediate.proc
    channel_fastest = ctx.intermediate.get("proc_layout") == "channel_fastest"

    def read(ibatch: int) -> np.ndarray:
        with open(path, "rb") as f:
            f.seek(2 * nt * nchan * int(ibatch))
            block = np.fromfile(f, np.int16, count=nt * nchan)
        if block.size != nt * nchan:
            raise DataQualityError(f"proc file {path} is shorter than batch {ibatch} needs; "
                                   "rerun with clear_context=True.")
        if channel_fastest:
            return block.reshape(nt, nchan)
        return block.reshape(nchan, nt).T  # time fastest: a Fortran (NT, Nchan) view
    return read


def proc_sample_reader(ctx, path=None):
    """``read(start, n, pad=False) -> (m, Nchan) int16``: samples [start, start + n) of a
    channel-fastest (Kilosort 2.5) proc file, m = n or fewer at the end of the file; with
    ``pad`` the missing samples repeat the last one (v2.5.2 trackAndSort's padded batches).

    Kilosort 2.5 reads overlapping stretches of its proc file (NT + ntbuff samples from batch
    k's start, or NT + 2 ntbuff with the padding), which time-fastest blocks do not allow.
    """
    nchan = ctx.probe_good.Nchan
    path = ctx.intermediate.proc if path is None else path
    if ctx.intermediate.get("proc_layout") != "channel_fastest":
        raise ValueError("proc_sample_reader needs the channel-fastest (Kilosort 2.5) proc layout")

    def read(start: int, n: int, pad: bool = False) -> np.ndarray:
        with open(path, "rb") as f:
            f.seek(2 * nchan * int(start))
            block = np.fromfile(f, np.int16, count=int(n) * nchan)
        if block.size == 0 or block.size % nchan:
            raise DataQualityError(f"proc file {path} has no whole sample at {start}; rerun "
                                   "with clear_context=True.")
        data = block.reshape(-1, nchan)
        if pad and data.shape[0] < n:
            data = np.concatenate([data, np.repeat(data[-1:], n - data.shape[0], axis=0)])
        return data
    return read
