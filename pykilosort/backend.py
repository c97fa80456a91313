"""Compute backend: CPU (numpy + numba) or CUDA (CuPy), chosen once per run.

Importing this module never imports CuPy; :func:`get_backend` probes for it only when asked.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

import numpy as np

from .errors import DeviceError

logger = logging.getLogger(__name__)

__all__ = ["Backend", "CPU", "get_backend", "cuda_available", "array_module", "set_num_threads"]

DEVICES = ("auto", "cpu", "cuda")


@functools.lru_cache(maxsize=1)
def _cuda_probe() -> tuple[bool, str]:
    """(available, reason): whether CuPy imports and sees at least one GPU."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return False, f"CuPy is not importable ({exc.__class__.__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"CuPy found no usable CUDA driver ({exc})"
    return (n > 0), (f"{n} CUDA device(s)" if n else "CuPy sees no CUDA device")


def cuda_available() -> bool:
    return _cuda_probe()[0]


@dataclass(frozen=True)
class Backend:
    """The device arrays live on: ``'cpu'`` (numpy, numba twins) or ``'cuda'`` (CuPy, .cu kernels)."""

    name: str

    @property
    def xp(self):
        if self.name == "cuda":
            import cupy

            return cupy
        return np

    def asarray(self, a, *, dtype=None, order="F"):
        """Move ``a`` to this device, Fortran-ordered by default as the kernels expect."""
        return self.xp.asarray(a, dtype=dtype, order=order)

    def to_numpy(self, a) -> np.ndarray:
        return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)

    def put(self, a):
        """``a`` on this device: a numpy array is copied to the GPU (keeping its layout); device
        arrays, scalars and None pass through, and nothing moves on the CPU."""
        if self.name == "cpu" or not isinstance(a, np.ndarray):
            return a
        return self.xp.asarray(a, order="K")

    def fetch(self, result):
        """numpy copies of a kernel's outputs, in their device layout: one array, or each field
        of a named tuple or dataclass (CuPy's plain ``get()`` would return C order)."""
        if self.name == "cpu":  # already numpy: nothing to copy (hot loops call this per batch)
            return result
        if isinstance(result, tuple) and hasattr(result, "_fields"):
            return type(result)(*(self.fetch(v) for v in result))
        if dataclasses.is_dataclass(result) and not isinstance(result, type):
            return dataclasses.replace(result, **{f.name: self.fetch(getattr(result, f.name))
                                                  for f in dataclasses.fields(result) if f.init})
        if result is None or isinstance(result, np.ndarray):
            return result
        return result.get(order="A") if hasattr(result, "get") else result

    def describe(self) -> str:
        if self.name == "cpu":
            import numba

            return f"cpu (numba, {numba.get_num_threads()} threads)"
        import cupy

        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        free, total = cupy.cuda.runtime.memGetInfo()
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return (f"cuda:{dev.id} {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), "
                f"CuPy {cupy.__version__}")


CPU = Backend("cpu")  # the default of functions whose kernels may run on either device


def get_backend(device: str = "auto") -> Backend:
    """Resolve ``device`` ('auto', 'cpu', 'cuda') to a Backend.

    'auto' takes CUDA when CuPy sees a GPU, else the CPU; 'cuda' without one raises DeviceError.
    """
    if isinstance(device, Backend):
        return device
    if device not in DEVICES:
        raise DeviceError(f"device={device!r} is not one of {DEVICES}.")
    if device == "cpu":
        return CPU
    ok, reason = _cuda_probe()
    if device == "cuda" and not ok:
        raise DeviceError(f"device='cuda' was requested but {reason}. Install the CuPy wheel for "
                          "your CUDA (pip install 'pykilosort[cuda12]' or '[cuda13]') on a machine "
                          "with an NVIDIA GPU, or use device='cpu'.")
    if not ok:
        logger.info("no GPU (%s): running on the CPU", reason)
    return Backend("cuda" if ok else "cpu")


def array_module(a):
    """numpy or cupy, whichever owns ``a`` (without importing CuPy for numpy arrays)."""
    if isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] != "cupy":
        return np
    import cupy

    return cupy


def set_num_threads(n: int | None) -> None:
    """Limit numba's parallel loops to ``n`` threads (None: numba's default, all cores)."""
    if n is None:
        return
    import numba

    n = int(n)
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise DeviceError(f"n_threads={n} must be between 1 and {numba.config.NUMBA_NUM_THREADS}.")
    numba.set_num_threads(n)
