"""reuse_freed_memory: a freed large array's pages serve the next one instead of fresh page faults."""
import resource

import numpy as np
import pytest

from pykilosort import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="glibc's malloc only (Linux)")

_MIB = 2**20


def _faults_of_reallocating(n_times=5, size=64 * _MIB) -> int:
    """Minor page faults of allocating, touching and freeing a ``size``-byte array n times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n_times):
        a = np.empty(size, np.uint8)
        a[::4096] = 1
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_freed_pages_are_reused_inside_and_returned_after(monkeypatch):
    monkeypatch.delenv("PYKILOSORT_MALLOC_REUSE", raising=False)
    unmapped = _faults_of_reallocating()
    # 64 MiB is over glibc's largest mmap threshold: each array is a fresh mapping, faulted in
    # page by page (one fault per 2 MiB even with transparent huge pages)
    assert unmapped >= 5 * 32
    with heap.reuse_freed_memory() as active:
        assert active
        _faults_of_reallocating(n_times=1)  # the heap grows once
        assert _faults_of_reallocating() < 0.02 * unmapped
    assert _faults_of_reallocating() >= 5 * 32  # defaults restored: mapped and unmapped again


def test_nested_use_restores_only_at_the_outer_exit(monkeypatch):
    monkeypatch.delenv("PYKILOSORT_MALLOC_REUSE", raising=False)
    with heap.reuse_freed_memory():
        with heap.reuse_freed_memory():
            pass
        _faults_of_reallocating(n_times=1)
        assert _faults_of_reallocating() < 16  # still reusing after the inner block left
    assert heap._users == 0


def test_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv("PYKILOSORT_MALLOC_REUSE", "0")
    with heap.reuse_freed_memory() as active:
        assert not active
        assert _faults_of_reallocating() >= 5 * 32


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / _MIB


def test_release_returns_the_kept_memory(monkeypatch):
    """Between pipeline steps the kept blocks go back, so a step's peak is its own."""
    monkeypatch.delenv("PYKILOSORT_MALLOC_REUSE", raising=False)
    with heap.reuse_freed_memory():
        before = _rss_mib()
        a = np.ones(256 * _MIB, np.uint8)
        del a
        kept = _rss_mib() - before
        heap.release_free_memory()
        returned = kept - (_rss_mib() - before)
    assert kept > 200 and returned > 200, (kept, returned)
