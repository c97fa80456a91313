"""Injectable random streams, including one that reproduces MATLAB/Octave's.

Kilosort2 draws random numbers in two places: ``randperm(n)`` in initializeWdata2 (batch
reordering) and ``randperm(n, k)`` in extractTemplatesfromSnippets (template learning), after
``rng('default'); rng(seed)``. :class:`OctaveStream` reproduces GNU Octave's stream exactly (checked
against Octave in matlab_reference): ``rng(s)`` seeds the Mersenne Twister like numpy's
``RandomState([s])``, ``rand`` yields the same 53-bit doubles, filled column-major, and
``randperm(n, k)`` is a partial Knuth shuffle over ``rand(1, k)``. :class:`NumpyStream` is a modern
PCG64 stream for users who do not need bit-compatibility. Either is deterministic for a seed.
"""
from __future__ import annotations

import numpy as np

__all__ = ["OctaveStream", "NumpyStream", "make_stream", "STREAMS"]


class OctaveStream:
    """The random stream of Octave after ``rng('default'); rng(seed)``."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._state = np.random.RandomState([self.seed])

    def rand(self, *shape: int) -> np.ndarray:
        """Octave ``rand(shape)``: uniform [0, 1) doubles, filled column-major like MATLAB."""
        shape = shape or (1,)
        n = int(np.prod(shape))
        return self._state.random_sample(n).reshape(shape, order="F")

    def randperm(self, n: int, k: int | None = None) -> np.ndarray:
        """Octave ``randperm(n, k)`` minus 1: k distinct 0-based indices of range(n), int64."""
        k = n if k is None else int(k)
        if not 0 <= k <= n:
            raise ValueError(f"randperm: k={k} must be between 0 and n={n}")
        u = self._state.random_sample(k)
        idx = np.arange(n, dtype=np.int64)
        for i in range(k):  # Knuth shuffle of the first k positions, as Octave's randperm.cc
            j = i + int(np.floor(u[i] * (n - i)))
            idx[i], idx[j] = idx[j], idx[i]
        return idx[:k].copy()


class NumpyStream:
    """A PCG64 stream (numpy's default generator); not bit-compatible with MATLAB/Octave."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._gen = np.random.Generator(np.random.PCG64(self.seed))

    def rand(self, *shape: int) -> np.ndarray:
        return self._gen.random(shape or (1,))

    def randperm(self, n: int, k: int | None = None) -> np.ndarray:
        k = n if k is None else int(k)
        return self._gen.permutation(n)[:k].astype(np.int64)


STREAMS = {"octave": OctaveStream, "numpy": NumpyStream}


def make_stream(kind: str, seed: int):
    """A fresh stream of ``kind`` ('octave' or 'numpy') seeded with ``seed``."""
    try:
        return STREAMS[kind](seed)
    except KeyError:
        raise ValueError(f"unknown random stream {kind!r}; choose one of {sorted(STREAMS)}") from None
