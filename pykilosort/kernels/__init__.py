"""Kernels: one Python entry per original mex file, dispatching to CUDA (CuPy) or numba."""
from .lfilter import lfilter
from .registry import registered

__all__ = ["lfilter", "registered"]
