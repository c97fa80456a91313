"""Small shared helpers: the Bunch record and atomic file writes."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["Bunch", "file_digest", "atomic_path", "save_npy_atomic", "write_text_atomic", "write_json_atomic"]

_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BLOCKS, _BLOCK = 64, 64 * 2**10


class Bunch(dict):
    """A dict with attribute access (the type SpikeInterface's wrapper builds probes with)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def copy(self) -> "Bunch":
        return Bunch(super().copy())


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    Readers therefore see either the old file or the complete new one, never a half-written file
    (os.replace is atomic on POSIX and Windows within one filesystem).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any file
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npy_atomic(path, array: np.ndarray, *, fortran: bool | None = None) -> None:
    """Save ``array`` as .npy atomically; ``fortran=True`` stores it column-major like MATLAB."""
    array = np.asarray(array)
    if fortran:
        array = np.asfortranarray(array)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_digest(path: Path) -> str:
    """blake2b of a file: the whole file up to 64 MiB; beyond, 64 evenly spaced 64 KiB blocks.

    Large streams (the proc file) are sampled to keep checks fast; their size is checked exactly.
    """
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        else:
            for offset in np.linspace(0, size - _BLOCK, _SAMPLE_BLOCKS).astype(np.int64):
                f.seek(int(offset))
                h.update(f.read(_BLOCK))
    return h.hexdigest()


def file_sha256(path) -> str:
    """sha256 of a whole file, read in 16 MiB blocks: identity of a file, byte for byte (the
    benchmarks' recordings, the Octave references' inputs), where file_digest samples."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def release_mapped_pages(array) -> None:
    """Drop the pages of a memory-mapped array from this process's resident set (they stay in
    the page cache). Reading a mapped file touches pages that count as the process's memory
    until the kernel reclaims them, so memory would look like it grows with the file; arrays
    that are not memory maps are left alone."""
    import mmap

    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "_mmap", None) or getattr(base, "base", None)
    if base is not None and hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)
