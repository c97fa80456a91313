"""Raw data: one or several flat binary files, concatenated in time and memory-mapped.

Files are sample-major (each sample holds ``n_channels`` values, channel fastest), as SpikeGLX,
Open Ephys .dat and Kilosort write them. Samples are indexed over the concatenation, in the order
the files were given.
"""
from __future__ import annotations

import hashlib
import logging
import mmap
import os
from pathlib import Path

import numpy as np

from .errors import DataQualityError, RawDataError

logger = logging.getLogger(__name__)

__all__ = ["RawData", "read_spikeglx_meta", "find_meta", "channel_counts_fitting", "read_batch",
           "read_batch_ks25", "batch_read_start"]

_COMMON_COUNTS = (16, 32, 64, 128, 256, 384, 385, 768, 769)


def channel_counts_fitting(n_values: int, *, max_channels: int = 1024) -> list[int]:
    """Channel counts <= max_channels that divide ``n_values`` (candidates for a file's n_channels)."""
    return [n for n in range(1, max_channels + 1) if n_values % n == 0]


def _size_error(path: Path, size: int, n_channels: int, itemsize: int) -> RawDataError:
    fits = channel_counts_fitting(size // itemsize) if size % itemsize == 0 else []
    common = [n for n in fits if n in _COMMON_COUNTS]
    hint = (f" Channel counts that fit this file: {fits[-12:]}" if fits else
            f" The size is not even a multiple of the {itemsize}-byte sample type: check dtype.")
    if common:
        hint += f" (of the usual ones: {common})"
    extra = " Neuropixels SpikeGLX files save 385 channels (384 + sync)." if n_channels in (384, 385) else ""
    return RawDataError(f"{path} has {size} bytes, not a multiple of n_channels x itemsize = "
                        f"{n_channels} x {itemsize}: n_channels is wrong for this file.{hint}.{extra}")


def _release_pages(mapped: np.memmap, row0: int, row1: int) -> None:
    """Drop rows [row0, row1) of a read-only file mapping from this process's resident set.

    Pages of a file mapping that were read count in RSS until the kernel reclaims them, so a
    streaming pass over a long recording would look like memory growing with its duration. The
    data stay in the page cache; this only keeps our resident memory bounded by the batch size.
    """
    raw = getattr(mapped, "_mmap", None)
    if raw is None or not hasattr(raw, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return  # e.g. Windows: nothing to do
    row_bytes = mapped.shape[1] * mapped.dtype.itemsize
    first = (row0 * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
    last = -(-(row1 * row_bytes) // mmap.PAGESIZE) * mmap.PAGESIZE
    last = min(last, len(raw))
    if last > first:
        raw.madvise(mmap.MADV_DONTNEED, first, last - first)


def _non_finite_error(block: np.ndarray, start: int):
    bad_t, bad_c = np.nonzero(~np.isfinite(block))
    raise DataQualityError(
        f"the raw data hold non-finite samples (NaN or inf), e.g. at sample {start + bad_t[0]} on "
        f"channel row {bad_c[0]} ({np.unique(bad_c).size} channel(s) affected in samples "
        f"[{start}, {start + block.shape[0]})): replace them (e.g. with zeros) or exclude those "
        "channels from the probe.")


def read_spikeglx_meta(path) -> dict:
    """Parse a SpikeGLX .meta file (``key=value`` lines, ``~`` prefix stripped) into a dict of strings."""
    meta = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            meta[key.strip().lstrip("~")] = value.strip()
    return meta


def find_meta(bin_path) -> Path | None:
    """The SpikeGLX ``.meta`` file beside ``bin_path`` (same stem), if there is one."""
    meta = Path(bin_path).with_suffix(".meta")
    return meta if meta.is_file() else None


class RawData:
    """Several flat binary files seen as one (n_samples, n_channels) recording.

    Args:
        paths: a path or a list of paths, concatenated in the given order.
        n_channels: values per sample (NchanTOT).
        dtype: sample type (int16 for SpikeGLX / Open Ephys).
    """

    def __init__(self, paths, *, n_channels: int, dtype="int16"):
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise RawDataError("no raw data file given.")
        self.paths = [Path(p).expanduser().resolve() for p in paths]
        self.n_channels = int(n_channels)
        self.dtype = np.dtype(dtype)
        if self.n_channels < 1:
            raise RawDataError(f"n_channels must be >= 1, got {n_channels}.")
        self._maps = [self._open(p) for p in self.paths]
        lengths = [m.shape[0] for m in self._maps]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def _open(self, path: Path) -> np.memmap:
        if not path.is_file():
            raise RawDataError(f"raw data file not found: {path}")
        size = path.stat().st_size
        row = self.n_channels * self.dtype.itemsize
        if size == 0:
            raise RawDataError(f"{path} is empty.")
        if size % row:
            raise _size_error(path, size, self.n_channels, self.dtype.itemsize)
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(size // row, self.n_channels))

    # ------------------------------------------------------------------ properties
    @property
    def n_samples(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_samples, self.n_channels

    @property
    def name(self) -> str:
        """A folder-safe name of the recording: the first file's stem (+N for more files)."""
        stem = self.paths[0].stem
        return stem if len(self.paths) == 1 else f"{stem}+{len(self.paths) - 1}"

    def key(self) -> str:
        """Identity of the input: paths, sizes, modification times, layout. Changes rerun everything."""
        h = hashlib.sha256()
        for p in self.paths:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        h.update(f"{self.n_channels}|{self.dtype.str}".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"paths": [str(p) for p in self.paths], "n_channels": self.n_channels,
                "dtype": self.dtype.name, "n_samples": self.n_samples}

    def __repr__(self) -> str:
        return (f"RawData({self.name!r}, {len(self.paths)} file(s), {self.n_samples} samples x "
                f"{self.n_channels} channels, {self.dtype.name})")

    # ------------------------------------------------------------------ reading
    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of all channels as a (stop - start, n_channels) array (a copy).

        Reads across file boundaries. ``start``/``stop`` must lie within [0, n_samples]. Float
        recordings are checked for NaN/inf, which would otherwise spread silently through filters.
        """
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.n_samples:
            raise RawDataError(f"cannot read samples [{start}, {stop}) of a recording with "
                               f"{self.n_samples} samples.")
        out = np.empty((stop - start, self.n_channels), self.dtype)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        pos = start
        for i in range(max(first, 0), len(self._maps)):
            if pos >= stop:
                break
            f0, f1 = self._starts[i], self._starts[i + 1]
            take = min(stop, f1) - pos
            if take > 0:
                out[pos - start: pos - start + take] = self._maps[i][pos - f0: pos - f0 + take]
                _release_pages(self._maps[i], pos - f0, pos - f0 + take)
                pos += take
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            _non_finite_error(out, start)
        return out

    def read_padded(self, start: int, stop: int, *, hi: int | None = None) -> np.ndarray:
        """Samples [start, stop) with everything at or past ``hi`` (default: the end) replaced by
        the last sample before ``hi`` — MATLAB preprocessDataSub's padding of the last batch.

        Returns (stop - start, n_channels). ``start`` must be < ``hi``.
        """
        hi = self.n_samples if hi is None else min(int(hi), self.n_samples)
        if not 0 <= start < hi:
            raise RawDataError(f"batch start {start} is outside the data [0, {hi}).")
        valid = self.read(start, min(stop, hi))
        if valid.shape[0] == stop - start:
            return valid
        out = np.empty((stop - start, self.n_channels), self.dtype)
        out[: valid.shape[0]] = valid
        out[valid.shape[0]:] = valid[-1]
        return out


def read_batch(raw: RawData, ibatch: int, *, NT: int, ntbuff: int, NTbuff: int, tstart: int,
               hi: int) -> tuple[np.ndarray, int]:
    """One Kilosort2 batch with its filter buffers (0-based ``ibatch``), as get_whitening_matrix.m
    and the v2.0 preprocessDataSub.m read it.

    Batches advance by NT - ntbuff samples; each read starts 2*ntbuff before its batch and is
    NTbuff long (NT + 4*ntbuff in KS2, NT + 3*ntbuff in KS2.5), padded past ``hi`` with the last
    sample. The first read cannot start before sample 0, so it has no front buffer.

    Returns:
        buff: (NTbuff, n_channels) raw samples.
        ioffset: index in ``buff`` of the batch's first sample (0 for the first batch, else ntbuff).
    """
    offset = batch_read_start(ibatch, NT=NT, ntbuff=ntbuff, tstart=tstart)
    ioffset = 0 if offset == 0 else ntbuff
    return raw.read_padded(offset, offset + NTbuff, hi=hi), ioffset


def batch_read_start(ibatch: int, *, NT: int, ntbuff: int, tstart: int, ks25: bool = False) -> int:
    """First raw sample read for batch ``ibatch`` (0-based): KS2 or KS2.5 geometry."""
    if ks25:
        return max(0, tstart + NT * ibatch - ntbuff)
    return max(0, tstart + (NT - ntbuff) * ibatch - 2 * ntbuff)


def read_batch_ks25(raw: RawData, ibatch: int, *, NT: int, ntbuff: int, NTbuff: int, tstart: int,
                    hi: int) -> np.ndarray:
    """One Kilosort 2.5 batch (v2.5 preprocessDataSub.m): NT samples with ntbuff before and
    2*ntbuff after (NTbuff = NT + 3*ntbuff), batches advancing by NT. The first batch, which
    cannot look before sample 0, is front-padded with ntbuff copies of its first sample.

    Returns (NTbuff, n_channels); the batch itself is rows ntbuff .. ntbuff + NT.
    """
    offset = batch_read_start(ibatch, NT=NT, ntbuff=ntbuff, tstart=tstart, ks25=True)
    buff = raw.read_padded(offset, offset + NTbuff, hi=hi)
    if offset == 0:
        buff = np.concatenate([np.repeat(buff[:1], ntbuff, axis=0), buff[: NTbuff - ntbuff]])
    return buff
