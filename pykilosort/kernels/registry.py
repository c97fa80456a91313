"""Kernel registry: each kernel is one name with a CUDA and a CPU (numba) implementation.

CUDA sources are the ``.cu`` files of the top-level ``cuda/`` folder, shipped in the wheel as the
package ``pykilosort.cuda`` and found through :mod:`importlib.resources`. Each file is compiled once
per process and set of ``-D`` defines into a cached ``cupy.RawModule``.
"""
from __future__ import annotations

import functools
import importlib.resources
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from ..backend import array_module
from ..errors import DeviceError

__all__ = ["register", "implementation", "dispatch", "registered", "cuda_source_path",
           "cuda_files", "cuda_module", "nvcc_compile"]

_IMPLS: dict[str, dict[str, Callable]] = {}


def register(name: str, device: str):
    """Decorator: register ``func`` as the ``device`` ('cpu' or 'cuda') implementation of ``name``."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")

    def deco(func):
        impls = _IMPLS.setdefault(name, {})
        if device in impls:
            raise ValueError(f"kernel {name!r} already has a {device} implementation")
        impls[device] = func
        return func

    return deco


def implementation(name: str, device: str) -> Callable:
    try:
        return _IMPLS[name][device]
    except KeyError:
        raise DeviceError(f"kernel {name!r} has no {device} implementation") from None


def dispatch(name: str, array) -> Callable:
    """The implementation of ``name`` for the device that owns ``array`` (numpy → cpu)."""
    import numpy as np

    return implementation(name, "cpu" if array_module(array) is np else "cuda")


def registered() -> dict[str, tuple[str, ...]]:
    """Kernel name → devices it is implemented for."""
    return {k: tuple(sorted(v)) for k, v in _IMPLS.items()}


def _cuda_dir() -> Path:
    """Folder holding the .cu files: the installed package data, else the source tree's cuda/."""
    try:
        root = importlib.resources.files("pykilosort.cuda")
        path = Path(str(root))
        if any(path.glob("*.cu")):
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "cuda"


def cuda_files() -> list[Path]:
    return sorted(_cuda_dir().glob("*.cu"))


def cuda_source_path(filename: str) -> Path:
    path = _cuda_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"CUDA source {filename} not found in {_cuda_dir()}; the package "
                                "installation is incomplete (reinstall pykilosort).")
    return path


@functools.lru_cache(maxsize=None)
def cuda_module(filename: str, defines: tuple = ()):
    """Compile ``filename`` with ``-DNAME=VALUE`` for each (NAME, VALUE) of ``defines``; cached."""
    import cupy

    source = cuda_source_path(filename).read_text()
    options = ("-std=c++17",) + tuple(f"-D{k}={v}" for k, v in defines)
    module = cupy.RawModule(code=source, options=options)
    module.compile()
    return module


def nvcc_compile(path: Path, *, arch: str = "sm_80", defines: tuple = (), timeout: float = 120):
    """Compile one .cu file to PTX with nvcc (no GPU needed). Returns (ok, compiler output)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return False, "nvcc not found on PATH"
    cmd = [nvcc, "-std=c++17", "--ptx", f"-arch={arch}", "-o", "/dev/null", str(path)]
    cmd += [f"-D{k}={v}" for k, v in defines]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
