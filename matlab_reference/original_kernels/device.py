"""The CUDA runtime and mxGPU calls of a mexFunction, on the executor's stand-in device.

Device buffers are flat 1-D arrays of the element type, as cudaMalloc gives; MATLAB arrays
arrive in column-major order and leave through ``out`` with their MATLAB dimensions.
"""
from __future__ import annotations

import numpy as np

from .executor import executor

MAX_THREADS_PER_BLOCK = 1024


def u32(params, k: int) -> int:
    """``(unsigned int) Params[k]`` (0-based k, as in the C source): truncation toward zero."""
    return int(np.float64(params[k])) % 2 ** 32


def i32(params, k: int) -> int:
    """``(int) Params[k]``."""
    return int(np.float64(params[k]))


class Gpu:
    """One mex call's device: allocations, copies and launches (a GPU-rejected launch is
    recorded in ``rejected`` and does nothing, as the mex never checks launch errors)."""

    def __init__(self):
        _, self.cp = executor()
        self.rejected: list[tuple] = []
        self.launches: list[tuple] = []

    # -- memory
    def params(self, params):
        """cudaMalloc + cudaMemcpy of the mex's double Params vector (every element)."""
        return self.cp.asarray(np.asarray(params, np.float64).ravel(order="F"))

    def from_mx(self, a, dtype=None):
        """mxGPUCreateFromMxArray / mxGPUCopyFromMxArray: a device copy of the array's
        column-major data, same class (dtype only to name MATLAB's logical as bool)."""
        a = np.asarray(a)
        if dtype is not None:
            if a.dtype.itemsize != np.dtype(dtype).itemsize:
                raise TypeError(f"{a.dtype} array where the mex reads {np.dtype(dtype)}")
            a = a.view(dtype)
        return self.cp.asarray(np.ascontiguousarray(a.ravel(order="F")))

    def malloc(self, n: int, dtype):
        """cudaMalloc / MX_GPU_DO_NOT_INITIALIZE: contents undefined (the executor fills them
        with 0xFF bytes, so a read of an unwritten element shows up as NaN / -1)."""
        return self.cp.empty(int(n), dtype)

    def zeros(self, n: int, dtype):
        """cudaMalloc + cudaMemset(.., 0, ..) (or MX_GPU_INITIALIZE_VALUES)."""
        return self.cp.zeros(int(n), dtype)

    @staticmethod
    def get(d, n: int | None = None) -> np.ndarray:
        """cudaMemcpy device to host of the first n elements (all by default)."""
        h = d.get()
        return h if n is None else h[:n].copy()

    @staticmethod
    def out(d, dims, n: int | None = None) -> np.ndarray:
        """A MATLAB output array of dimensions ``dims`` from a device buffer."""
        count = int(np.prod(dims))
        return Gpu.get(d, count if n is None else n).reshape(tuple(int(x) for x in dims), order="F")

    def kernel_names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _, _ in self.launches))

    # -- launches
    def launch(self, compiled, kernel: str, grid, block, args, shared_mem: int = 0) -> bool:
        """``kernel<<<grid, block, shared_mem>>>(args)``. A configuration CUDA rejects (a 0
        dimension, more than 1024 threads per block) launches nothing, as on the GPU."""
        grid = tuple(int(g) for g in np.atleast_1d(grid))
        block = tuple(int(b) for b in np.atleast_1d(block))
        if min(grid) <= 0 or min(block) <= 0 or int(np.prod(block)) > MAX_THREADS_PER_BLOCK:
            self.rejected.append((kernel, grid, block))
            return False
        compiled.kernel(kernel)(grid, block, tuple(args), shared_mem=shared_mem)
        self.launches.append((kernel, grid, block))
        return True
