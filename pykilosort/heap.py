"""Keep freed memory for reuse while a sort runs (glibc's malloc; elsewhere nothing changes).

Every batch allocates and frees the same large arrays: the template matcher's working arrays
(300-600 MB a batch at 384 channels), the detector's scores, the float32 copy of the batch.
glibc serves blocks above its mmap threshold (32 MiB at most) with fresh mmaps and unmaps them
on free, so each batch faults in hundreds of MB of zeroed pages again. Measured on the 384-channel
benchmark recording (2 cores, AMD EPYC): the learn step spent 36 s of system time doing that and
took 151 s; served from the heap and kept there, 4 s of system time and 129 s, for 13% more peak
memory (1.21 -> 1.36 GB). Outputs are the same bit for bit: only where blocks live changes.

``reuse_freed_memory`` sets M_MMAP_MAX = 0 (large blocks come from the heap) and a 2 GiB
M_TRIM_THRESHOLD (freed memory stays in the heap) and on exit restores glibc's defaults and
returns the free memory to the system (malloc_trim); the pipeline also returns it between steps
(``release_free_memory``), so that a step's peak does not carry the last one's freed blocks. One
side effect outlasts it: setting these
turns off glibc's sliding mmap threshold for the rest of the process, which then stays at its
128 KiB start. PYKILOSORT_MALLOC_REUSE=0 in the environment turns all this off.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading

__all__ = ["reuse_freed_memory", "release_free_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4             # mallopt parameters (malloc.h)
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults
_KEEP_UP_TO = 2**31 - 1                              # mallopt takes a C int

_lock = threading.Lock()
_users = 0  # nested or concurrent sorts in one process: restore when the last one leaves


@functools.cache
def _glibc():
    """The C library if it is glibc (musl and others have no mallopt to tune), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def enabled() -> bool:
    """Whether :func:`reuse_freed_memory` changes anything here."""
    return os.environ.get("PYKILOSORT_MALLOC_REUSE", "1") != "0" and _glibc() is not None


@contextlib.contextmanager
def reuse_freed_memory():
    """Within the block, large blocks come from glibc's heap and freed memory stays there for
    the next batch's arrays. Yields whether the setting took effect."""
    global _users
    if not enabled():
        yield False
        return
    libc = _glibc()
    with _lock:
        _users += 1
        if _users == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO)
    try:
        yield True
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
                libc.malloc_trim(0)


def release_free_memory() -> None:
    """Return the heap's free memory to the system (glibc's malloc_trim; elsewhere, or with
    PYKILOSORT_MALLOC_REUSE=0, nothing)."""
    if enabled():
        _glibc().malloc_trim(0)
