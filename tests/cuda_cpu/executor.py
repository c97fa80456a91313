"""Build a .cu text with shim.h into a shared library (g++, cached) and launch its kernels.

    module = Module(path="cuda/mpnu8.cu", defines={"MP_THREADS": 256})
    kernel = module.get_function("mp_cleanup")
    kernel((blocks,), (256,), (err, ftype, ..., np.int32(NT)), shared_mem=0)

Arguments follow CuPy's RawKernel convention: device arrays (the stand-in cupy's ndarray) become
pointers to their first element, numpy scalars keep their type, Python int / float / bool are
passed as int64 / float64 / bool. Unlike CuPy, every argument is checked against the kernel's C++
parameter type: a scalar of the wrong kind or size, an array of the wrong dtype, or a host numpy
array where a device pointer is expected raises ArgumentError (a GPU would silently misread it).

Environment: PYKILOSORT_CUDA_CPU_BUILD (cache folder, default ~/.cache/pykilosort-cuda-cpu),
PYKILOSORT_CUDA_CPU_CXXFLAGS (extra g++ flags, e.g. "-fsanitize=address,undefined"),
PYKILOSORT_CUDA_CPU_FMA=1 (build with -mfma -ffp-contract=fast: plain a*b+c fused as nvcc does).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHIM = HERE / "shim.h"

__all__ = ["Module", "Kernel", "ArgumentError", "LaunchError", "configure", "schedule", "build",
           "kernel_names", "translate", "available"]


class ArgumentError(TypeError):
    """A kernel argument that does not match the kernel's parameter type."""


class LaunchError(RuntimeError):
    """A launch a GPU would refuse, or a block whose threads waited at different barriers."""


# ------------------------------------------------------------------ schedule
_SCHEDULES = {"forward": 0, "reverse": 1, "random": 2}
_config = {"schedule": "forward", "poison": True, "version": 0}


def configure(*, schedule: str | None = None, poison: bool | None = None) -> None:
    """Order of threads between barriers and of blocks ('forward', 'reverse', 'random:SEED'),
    and whether shared memory is filled with 0xFF before each block."""
    if schedule is not None:
        _parse_schedule(schedule)
        _config["schedule"] = schedule
    if poison is not None:
        _config["poison"] = bool(poison)
    _config["version"] += 1


def schedule() -> str:
    return _config["schedule"]


def _parse_schedule(text: str) -> tuple[int, int]:
    kind, _, seed = text.partition(":")
    if kind not in _SCHEDULES or (seed and not seed.isdigit()):
        raise ValueError(f"schedule {text!r}: expected forward, reverse or random:SEED")
    return _SCHEDULES[kind], int(seed or 1)


# ------------------------------------------------------------------ source to library
_GLOBAL = re.compile(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
                     r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(")
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?"
                            r"([A-Za-z_][\w\s:]*?)\s+(\w+)\s*\[\s*\]\s*;")


def kernel_names(source: str) -> list[str]:
    """Every ``__global__`` function of ``source`` (extern "C" or not), in order."""
    return list(dict.fromkeys(_GLOBAL.findall(source)))


def translate(source: str) -> str:
    """The one rewrite macros cannot do, keeping line numbers: ``extern __shared__ T x[];``
    becomes a pointer to the launch's dynamic shared memory; then the export of each kernel."""
    body = _EXTERN_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = static_cast<{m.group(1)}*>(cuda_cpu_dynamic_shared());",
        source)
    exports = "".join(f"CUDA_CPU_EXPORT({k})\n" for k in kernel_names(source))
    return f'#include "{SHIM}"\n#line 1\n{body}\n{exports}'


def _flags() -> list[str]:
    fma = (["-mfma", "-ffp-contract=fast"] if os.environ.get("PYKILOSORT_CUDA_CPU_FMA") == "1"
           else ["-ffp-contract=off"])
    extra = os.environ.get("PYKILOSORT_CUDA_CPU_CXXFLAGS", "").split()
    return ["-std=c++20", "-O2", *fma, "-fno-fast-math", "-fPIC", "-shared", "-fvisibility=hidden",
            "-w", *extra]


def _build_dir() -> Path:
    return Path(os.environ.get("PYKILOSORT_CUDA_CPU_BUILD",
                               Path.home() / ".cache" / "pykilosort-cuda-cpu"))


def available() -> str | None:
    """None if .cu files can be built here, else why not."""
    import platform
    import shutil

    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the fibre switch is x86-64 only (this is {platform.machine()})"
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        return "no C++ compiler (g++) on the PATH"
    return None


def build(source: str, defines: dict, *, name: str = "module") -> Path:
    """The shared library of ``source`` with ``-D`` ``defines``; built once, then cached by content
    (written to a temporary name and renamed, so parallel builds never see half a library)."""
    text = translate(source)
    flags = _flags() + [f"-D{k}={v}" for k, v in sorted(defines.items())]
    key = hashlib.sha256("\0".join([text, SHIM.read_text(), *flags]).encode()).hexdigest()[:20]
    lib = _build_dir() / f"{name}-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        src = Path(tmp) / f"{name}.cpp"
        src.write_text(text)
        out = Path(tmp) / lib.name
        proc = subprocess.run([os.environ.get("CXX", "g++"), *flags, "-o", str(out), str(src)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"g++ failed to build {name}:\n{proc.stderr[-4000:]}")
        os.replace(out, lib)
    return lib


# ------------------------------------------------------------------ modules and kernels
class Module:
    """A compiled .cu text (``code``) or file (``path``), with ``-D`` defines (a dict, or
    NVRTC-style options such as ``"-DNAME=VALUE"``; other options are ignored)."""

    def __init__(self, code: str | None = None, *, path=None, defines=None, options=(), name=None):
        if (code is None) == (path is None):
            raise ValueError("give code or path")
        self.source = Path(path).read_text() if path is not None else code
        self.name = name or (Path(path).stem if path is not None else "module")
        self.defines = dict(defines or {})
        for opt in options:
            if opt.startswith("-D"):
                k, _, v = opt[2:].partition("=")
                self.defines[k] = v or "1"
        self._lib = None

    def compile(self) -> None:
        if self._lib is None:
            self._lib = ctypes.CDLL(str(build(self.source, self.defines, name=self.name)))
            self._version = -1

    def get_function(self, name: str) -> "Kernel":
        if name not in kernel_names(self.source):
            raise AttributeError(f"{self.name} has no __global__ function {name!r}; it has "
                                 f"{kernel_names(self.source)}")
        self.compile()
        return Kernel(self, name)

    def _apply_config(self) -> None:
        if self._version != _config["version"]:
            kind, seed = _parse_schedule(_config["schedule"])
            self._lib.cuda_cpu_configure(kind, ctypes.c_ulonglong(seed), int(_config["poison"]))
            self._version = _config["version"]

    def stats(self) -> dict:
        """Barrier releases of the last launch, and how many had threads at different barriers."""
        out = (ctypes.c_ulonglong * 2)()
        self._lib.cuda_cpu_stats(out)
        return {"barriers": out[0], "divergent": out[1]}


class Kernel:
    def __init__(self, module: Module, name: str):
        self.module, self.name = module, name
        lib = module._lib
        self._launch = getattr(lib, f"cuda_cpu_launch_{name}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
        sig = getattr(lib, f"cuda_cpu_signature_{name}")
        sig.restype = ctypes.c_char_p
        self.signature = sig().decode().split()

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        args = tuple(args)
        if len(args) != len(self.signature):
            raise ArgumentError(f"{self.name} takes {len(self.signature)} arguments "
                                f"({' '.join(self.signature)}), got {len(args)}")
        keep = [_marshal(self.name, i, a, code) for i, (a, code) in enumerate(zip(args, self.signature))]
        pointers = (ctypes.c_void_p * max(len(keep), 1))(
            *[ctypes.cast(ctypes.pointer(k), ctypes.c_void_p) for k in keep])
        g, b = (ctypes.c_uint * 3)(*_dim3(grid)), (ctypes.c_uint * 3)(*_dim3(block))
        self.module._apply_config()
        if self._launch(g, b, int(shared_mem), pointers):
            self.module._lib.cuda_cpu_error.restype = ctypes.c_char_p
            raise LaunchError(f"{self.name}: {self.module._lib.cuda_cpu_error().decode()}")
        divergent = self.module.stats()["divergent"]
        if divergent:
            raise LaunchError(f"{self.name}: {divergent} barrier release(s) with threads waiting "
                              "at different __syncthreads() (undefined behaviour in CUDA)")

    def __repr__(self):
        return f"<Kernel {self.name}({', '.join(self.signature)})>"


def _dim3(d) -> tuple[int, int, int]:
    d = (d,) if np.isscalar(d) else tuple(d)
    if not 1 <= len(d) <= 3:
        raise LaunchError(f"grid/block must have 1 to 3 dimensions, got {d}")
    return tuple(int(x) for x in d) + (1,) * (3 - len(d))


_CTYPES = {"i1": ctypes.c_int8, "i2": ctypes.c_int16, "i4": ctypes.c_int32, "i8": ctypes.c_int64,
           "u1": ctypes.c_uint8, "u2": ctypes.c_uint16, "u4": ctypes.c_uint32,
           "u8": ctypes.c_uint64, "f4": ctypes.c_float, "f8": ctypes.c_double, "b1": ctypes.c_bool}


def _marshal(kernel: str, i: int, a, code: str):
    """A ctypes value holding argument ``i`` (kept alive by the caller during the launch)."""
    where = f"{kernel} argument {i} ({code})"
    if code.startswith("p:"):
        host = _device_buffer(a, where)
        want = code[2:]
        if want not in ("v", "?") and host.dtype.str[1:] != want and not (
                want == "b1" and host.dtype == np.bool_):
            raise ArgumentError(f"{where}: got an array of {host.dtype}")
        return ctypes.c_void_p(host.ctypes.data)
    if hasattr(a, "shape") and getattr(a, "ndim", 0) > 0:
        raise ArgumentError(f"{where}: got an array where a scalar is expected")
    if isinstance(a, (bool, np.bool_)):
        have = "b1"
    elif isinstance(a, np.generic):
        have = a.dtype.str[1:]
    elif isinstance(a, int):
        have = "i8"  # CuPy passes a Python int as a 64-bit integer
    elif isinstance(a, float):
        have = "f8"
    else:
        raise ArgumentError(f"{where}: unsupported argument type {type(a).__name__}")
    if have != code:
        raise ArgumentError(f"{where}: got {have} ({type(a).__name__}); pass np.{np.dtype(code).name}(...)")
    return _CTYPES[code](a.item() if isinstance(a, np.generic) else a)


def _device_buffer(a, where: str) -> np.ndarray:
    host = getattr(a, "_cuda_cpu_host", None)
    if host is None:
        kind = "a host numpy array" if isinstance(a, np.ndarray) else type(a).__name__
        raise ArgumentError(f"{where}: got {kind} where a device array is expected")
    if not (host.flags.c_contiguous or host.flags.f_contiguous):
        raise ArgumentError(f"{where}: a non-contiguous view; the kernel would read it as "
                            "contiguous memory")
    return host
