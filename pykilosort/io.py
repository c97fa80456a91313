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
from .utils import file_digest

logger = logging.getLogger(__name__)

__all__ = ["RawData", "expand_raw_paths", "read_spikeglx_meta", "find_meta", "channel_counts_fitting", "read_batch",
           "read_batch_ks25", "batch_read_start"]

_COMMON_COUNTS = (16, 32, 64, 128, 256, 384, 385, 768, 769)


def channel_counts_fitting(n_values: int, *, max_channels: int = 1024) -> list[int]:
    """Channel counts <= max_channels that divide ``n_values`` (candidates for a file's n_channels)."""
    return [n for n in range(1, max_channels + 1) if n_values % n == 0]


def _size_error(path: Path, size: int, n_channels: int, itemsize: int,
                origin: str | None) -> RawDataError:
    """What a file size that is not a whole number of samples means, and both ways out."""
    row = n_channels * itemsize
    whole, rest = divmod(size, row)
    given = f"n_channels={n_channels}" + (f" ({origin})" if origin else "")
    head = (f"{path} has {size} bytes, not a whole number of samples for {given} x {itemsize} "
            f"bytes: {whole} samples and {rest} bytes over.")
    truncated = (f" If the channel count is right, the file looks truncated, {row - rest} bytes "
                 "short of a whole last sample (a recording cut off, an interrupted copy): pass "
                 "drop_partial_sample=True to sort it without that partial sample.")
    fits = channel_counts_fitting(size // itemsize) if size % itemsize == 0 else []
    if fits:
        nearest = sorted(sorted(fits, key=lambda n: (abs(n - n_channels), n))[:6])
        common = [n for n in fits if n in _COMMON_COUNTS]
        wrong = (f" If the file is whole, the channel count is wrong; counts that fit its size "
                 f"include {nearest}" + (f" (of the usual ones: {common})" if common else "") +
                 ": pass n_channels=... (CLI --n-channels).")
    else:
        wrong = (f" Its size is not even a multiple of the {itemsize}-byte sample type, so no "
                 "channel count fits: the file is truncated, or dtype is wrong.")
    if n_channels in (384, 385):
        wrong += " Neuropixels SpikeGLX files save 385 channels (384 + sync)."
    inferred = origin is not None and origin.startswith("not given")
    return RawDataError(head + (wrong + truncated if inferred else truncated + wrong))


RAW_SUFFIXES = (".bin", ".dat", ".raw")


def expand_raw_paths(paths) -> list[Path]:
    """Absolute paths of the raw files; a folder stands for the single raw file it holds.

    A folder with several raw files is refused: their order in time (and whether they belong to one
    recording: SpikeGLX writes .ap.bin and .lf.bin side by side) must be given explicitly.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise RawDataError("no raw data file given.")
    out = []
    for p in (Path(p).expanduser().resolve() for p in paths):
        if not p.is_dir():
            out.append(p)
            continue
        found = sorted(f for f in p.iterdir() if f.suffix.lower() in RAW_SUFFIXES and f.is_file())
        if len(found) == 1:
            logger.info("%s is a folder: sorting the raw file it holds, %s", p, found[0].name)
            out.append(found[0])
        elif not found:
            raise RawDataError(f"{p} is a folder with no raw data file ({', '.join(RAW_SUFFIXES)}) "
                               "in it: give the path of the binary file to sort.")
        else:
            names = ", ".join(f.name for f in found[:8]) + (", ..." if len(found) > 8 else "")
            raise RawDataError(f"{p} is a folder with {len(found)} raw data files ({names}): give "
                               "the file(s) to sort explicitly; several files are concatenated in "
                               "the order given, so list them in time order.")
    return out


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
        paths: a path or a list of paths, concatenated in the given order (a folder stands for
            the one raw file in it).
        n_channels: values per sample (NchanTOT).
        dtype: sample type (int16 for SpikeGLX / Open Ephys).
        drop_partial_sample: ignore a partial last sample (a truncated file) instead of raising.
        n_channels_origin: where n_channels came from, for error messages (e.g. "from the probe").
    """

    def __init__(self, paths, *, n_channels: int, dtype="int16", drop_partial_sample: bool = False,
                 n_channels_origin: str | None = None):
        self.paths = expand_raw_paths(paths)
        self.n_channels = int(n_channels)
        self.dtype = np.dtype(dtype)
        self.drop_partial_sample = bool(drop_partial_sample)
        self._origin = n_channels_origin
        if self.n_channels < 1:
            raise RawDataError(f"n_channels must be >= 1, got {n_channels}.")
        self._maps = [self._open(p) for p in self.paths]
        lengths = [m.shape[0] for m in self._maps]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._fingerprint = None

    @classmethod
    def from_description(cls, desc: dict) -> "RawData":
        """The recording :meth:`describe` recorded; without its files (moved or deleted) a
        stand-in that knows the shape and identity but refuses to read samples."""
        kw = dict(n_channels=desc["n_channels"], dtype=desc["dtype"],
                  drop_partial_sample=desc.get("drop_partial_sample", False))
        paths = [Path(p) for p in desc["paths"]]
        if all(p.is_file() for p in paths):
            raw = cls(paths, **kw)
            if raw.n_samples == desc.get("n_samples", raw.n_samples):
                return raw
        raw = cls.__new__(cls)
        raw.paths, raw.n_channels, raw.dtype = paths, int(kw["n_channels"]), np.dtype(kw["dtype"])
        raw.drop_partial_sample, raw._origin, raw._maps = kw["drop_partial_sample"], None, None
        raw._starts = np.array([0, desc["n_samples"]], np.int64)
        raw._fingerprint = desc.get("fingerprint")
        return raw

    def _open(self, path: Path) -> np.memmap:
        if not path.is_file():
            raise RawDataError(f"raw data file not found: {path}")
        size = path.stat().st_size
        row = self.n_channels * self.dtype.itemsize
        if size == 0:
            raise RawDataError(f"{path} is empty.")
        if size % row:
            if not self.drop_partial_sample:
                raise _size_error(path, size, self.n_channels, self.dtype.itemsize, self._origin)
            logger.warning("%s: ignoring its last %d bytes, a partial sample (drop_partial_sample"
                           "=True)", path, size % row)
        if size < row:
            raise RawDataError(f"{path} holds {size} bytes, less than one sample of "
                               f"{self.n_channels} channels x {self.dtype.itemsize} bytes.")
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(size // row, self.n_channels))

    # ------------------------------------------------------------------ properties
    @property
    def n_samples(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_samples, self.n_channels

    @property
    def available(self) -> bool:
        """False for a stand-in whose files are not where they were (see from_description)."""
        return self._maps is not None

    @property
    def name(self) -> str:
        """A folder-safe name of the recording: the first file's stem (+N for more files)."""
        stem = self.paths[0].stem
        return stem if len(self.paths) == 1 else f"{stem}+{len(self.paths) - 1}"

    def fingerprint(self) -> str:
        """Identity of the content, wherever the files lie: each file's size and a digest of it
        (whole up to 64 MiB, else 64 evenly spaced 64 KiB blocks, see utils.file_digest)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for p in self.paths:
                h.update(f"{p.stat().st_size}|{file_digest(p)}|".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def key(self) -> str:
        """Identity of the input: content fingerprint and layout (not the path: a moved or renamed
        file keeps its results). Changes rerun everything."""
        h = hashlib.sha256()
        h.update(f"{self.fingerprint()}|{self.n_samples}|{self.n_channels}|{self.dtype.str}".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"paths": [str(p) for p in self.paths], "n_channels": self.n_channels,
                "dtype": self.dtype.name, "n_samples": self.n_samples,
                "drop_partial_sample": self.drop_partial_sample, "fingerprint": self.fingerprint()}

    def __repr__(self) -> str:
        where = "" if self.available else ", files not found"
        return (f"RawData({self.name!r}, {len(self.paths)} file(s), {self.n_samples} samples x "
                f"{self.n_channels} channels, {self.dtype.name}{where})")

    def _check_available(self) -> None:
        if not self.available:
            missing = [str(p) for p in self.paths if not p.is_file()] or [str(self.paths[0])]
            raise RawDataError(
                f"the raw data file {missing[0]} is no longer where this run found it (moved, "
                "renamed or deleted, or changed since): saved results load without it, but steps "
                "that read raw data need it. Run run() again with the file's current path; "
                "results whose inputs did not change are reused.")

    # ------------------------------------------------------------------ reading
    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of all channels as a (stop - start, n_channels) array (a copy).

        Reads across file boundaries. ``start``/``stop`` must lie within [0, n_samples]. Float
        recordings are checked for NaN/inf, which would otherwise spread silently through filters.
        """
        self._check_available()
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
