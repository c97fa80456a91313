"""Kernels: one Python entry per original mex file, dispatching to CUDA (CuPy) or numba."""
from .lfilter import lfilter, lfilter_forward_backward
from .preprocessing import common_reference, count_crossings, round_int16
from .registry import registered

__all__ = ["lfilter", "lfilter_forward_backward", "common_reference", "count_crossings", "round_int16", "registered"]
