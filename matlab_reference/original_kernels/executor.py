"""The CUDA-on-CPU executor (tests/cuda_cpu) and its stand-in CuPy: every import of them is here.

API used by this package:

    Module(code, *, defines=..., name=...).get_function(kernel)(grid, block, args, shared_mem=0)
    cupy: asarray, zeros, empty (uninitialised: the executor poisons it), ndarray.get()
    set_fma(bool) before a build, set_schedule('forward' | 'reverse' | 'random:SEED')
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "cuda_cpu"


class ExecutorUnavailable(RuntimeError):
    """The CUDA-on-CPU executor cannot run here (or a real CuPy is already imported)."""


_loaded: dict = {}


def executor():
    """(Module, cupy): the executor's module class and its stand-in CuPy."""
    if "api" not in _loaded:
        for path in (PROJECT / "fake_cupy", PROJECT.parent):
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
        from cuda_cpu import executor as ex  # tests/ on sys.path

        why = ex.available()
        if why:
            raise ExecutorUnavailable(f"the CUDA-on-CPU executor cannot run: {why}")
        import cupy

        here = Path(cupy.__file__).resolve()
        if PROJECT.resolve() not in here.parents:
            raise ExecutorUnavailable(f"`import cupy` gave {here}, not the executor's stand-in "
                                      "(a real CuPy cannot run these kernels on the CPU)")
        _loaded.update(ex=ex, api=(ex.Module, cupy))
    return _loaded["api"]


def kind() -> str:
    """The executor in use (recorded in results.json)."""
    executor()
    return "project"


def set_fma(fused: bool) -> None:
    """Compile the next modules with plain a*b+c fused into FMAs (nvcc's default --fmad=true)
    or not (C++ semantics, each operation rounded)."""
    executor()
    os.environ["PYKILOSORT_CUDA_CPU_FMA"] = "1" if fused else "0"


def set_schedule(schedule: str) -> None:
    """Order of the threads between barriers and of the blocks: 'forward' (default),
    'reverse' or 'random:SEED' (each a legal GPU interleaving)."""
    executor()
    _loaded["ex"].configure(schedule=schedule)
