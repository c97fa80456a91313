"""A stand-in for CuPy whose device memory is host memory and whose RawModule compiles .cu
sources with g++ (tests/cuda_cpu/executor.py). With this folder first on sys.path, pykilosort's
CuPy host code runs unchanged and its kernels execute on the CPU.

Strict where CuPy is strict, so host-side bugs show up as they would on a GPU:
  * ``ndarray`` is not a numpy subclass and lives in module ``cupy``;
  * implicit conversion to numpy (``np.asarray(dev)``, a numpy array mixed into a device
    operation) raises TypeError; ``.get()`` returns a C-ordered copy by default, as CuPy does;
  * ``empty`` / ``empty_like`` memory is filled with 0xFF bytes (NaN, -1), not zeros;
  * kernel arguments are checked against the kernel's C++ signature.
Everything else of CuPy's numpy-like API (functions, dtypes, constants) comes from numpy through
the module's ``__getattr__``: functions run on the host arrays and wrap their results again. The "GPU"
is visible (getDeviceCount() == 1) only while ``_visible`` is True: tests switch it on, so
``device="auto"`` elsewhere stays on the CPU.
"""
from __future__ import annotations

import functools
import sys
import types
from pathlib import Path

import numpy as _np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # tests/, for the cuda_cpu package
from cuda_cpu import executor as _executor  # noqa: E402

__version__ = "0.0+cuda-cpu"
_visible = False
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
             "construct a NumPy array explicitly.")


def _host(x, *, strict=True):
    """The host arrays inside ``x`` (nested tuples, lists, dicts); with ``strict``, numpy arrays
    are refused as CuPy refuses them in device operations."""
    if isinstance(x, ndarray):
        return x._cuda_cpu_host
    if strict and isinstance(x, _np.ndarray) and x.ndim > 0:
        raise TypeError(f"Unsupported type {type(x)}: a numpy array mixed with cupy arrays")
    if isinstance(x, (list, tuple)):
        return type(x)(_host(v, strict=strict) for v in x)
    if isinstance(x, dict):
        return {k: _host(v, strict=strict) for k, v in x.items()}
    return x


def _device(x):
    if isinstance(x, _np.ndarray):
        return ndarray(_host=x)
    if isinstance(x, _np.generic):  # CuPy gives 0-d arrays where numpy gives scalars
        return ndarray(_host=_np.asarray(x))
    if isinstance(x, (tuple, list)):
        return type(x)(_device(v) for v in x)
    return x


def _poisoned(h: _np.ndarray) -> _np.ndarray:
    if h.size:
        h.reshape(-1, order="A").view(_np.uint8).fill(0xFF)
    return h


class ndarray:
    """A device array: a numpy array in host memory, with CuPy's interface and restrictions."""

    __slots__ = ("_cuda_cpu_host", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape=None, dtype=float, memptr=None, strides=None, order="C", *, _host=None):
        if _host is None:
            _host = _poisoned(_np.empty(shape, dtype=dtype, order=order))
        object.__setattr__(self, "_cuda_cpu_host", _host)

    shape = property(lambda self: self._cuda_cpu_host.shape)
    dtype = property(lambda self: self._cuda_cpu_host.dtype)
    size = property(lambda self: self._cuda_cpu_host.size)
    ndim = property(lambda self: self._cuda_cpu_host.ndim)
    strides = property(lambda self: self._cuda_cpu_host.strides)
    itemsize = property(lambda self: self._cuda_cpu_host.itemsize)
    nbytes = property(lambda self: self._cuda_cpu_host.nbytes)
    flags = property(lambda self: self._cuda_cpu_host.flags)
    T = property(lambda self: ndarray(_host=self._cuda_cpu_host.T))

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A host copy, C-ordered unless ``order`` is 'F' or 'A' (CuPy's default is 'C')."""
        h = self._cuda_cpu_host
        if out is not None:
            out[...] = h
            return out
        if order.upper() == "A":
            order = "F" if h.flags.f_contiguous and not h.flags.c_contiguous else "C"
        return _np.array(h, order=order, copy=True)

    def set(self, arr, stream=None):
        self._cuda_cpu_host[...] = _np.asarray(arr)

    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        try:
            inputs, kwargs = _host(inputs), _host(kwargs)
        except TypeError:
            return NotImplemented
        return _device(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        try:
            args, kwargs = _host(args), _host(kwargs)
        except TypeError:
            return NotImplemented
        return _device(func(*args, **kwargs))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        h = self._cuda_cpu_host
        if not copy and h.dtype == _np.dtype(dtype):
            return self
        return ndarray(_host=h.astype(dtype, order=order))

    def copy(self, order="C"):
        return ndarray(_host=self._cuda_cpu_host.copy(order=order))

    def __getitem__(self, key):
        return _device(self._cuda_cpu_host[_host(key)])

    def __setitem__(self, key, value):
        self._cuda_cpu_host[_host(key)] = _host(value, strict=False)

    def __getattr__(self, name):
        """sum, max, ravel, reshape, fill, ...: numpy's method on the host array, wrapped."""
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._cuda_cpu_host, name)
        if not callable(attr):
            return _device(attr)

        @functools.wraps(attr)
        def method(*args, **kwargs):
            return _device(attr(*_host(args), **_host(kwargs)))
        return method

    def __setattr__(self, name, value):
        if name != "shape":
            raise AttributeError(name)
        self._cuda_cpu_host.shape = value

    def __len__(self):
        return len(self._cuda_cpu_host)

    def __iter__(self):
        return (_device(v) for v in self._cuda_cpu_host)

    def __repr__(self):
        return "cuda_cpu:" + repr(self._cuda_cpu_host)

    __hash__ = None


def _scalar(convert):
    return lambda self: convert(self._cuda_cpu_host)


for _name, _convert in (("__int__", int), ("__float__", float), ("__bool__", bool),
                        ("__index__", _np.ndarray.__index__), ("item", _np.ndarray.item),
                        ("tolist", _np.ndarray.tolist), ("__str__", str)):
    setattr(ndarray, _name, _scalar(_convert))


def _operator(name):
    op = getattr(_np.ndarray, name)

    def f(self, *other):
        try:
            other = _host(other)
        except TypeError:
            return NotImplemented
        return _device(op(self._cuda_cpu_host, *other))
    f.__name__ = name
    return f


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor",
            "lshift", "rshift", "matmul"):
    for _form in ("__%s__", "__r%s__", "__i%s__"):
        if hasattr(_np.ndarray, _form % _op):
            setattr(ndarray, _form % _op, _operator(_form % _op))
for _name in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__neg__", "__pos__",
              "__abs__", "__invert__"):
    setattr(ndarray, _name, _operator(_name))


# ------------------------------------------------------------------ constructors and transfers
def asarray(a, dtype=None, order=None, blocking=False):
    if isinstance(a, ndarray):
        h = _np.asarray(a._cuda_cpu_host, dtype=dtype, order=order)
        return a if h is a._cuda_cpu_host else ndarray(_host=h)
    # host to device is always a copy into new device memory
    return ndarray(_host=_np.array(_host(a, strict=False), dtype=dtype, order=order or "K"))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    return ndarray(_host=_np.array(_host(obj, strict=False), dtype=dtype, order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    return asarray(a, dtype=dtype, order="C")


def asfortranarray(a, dtype=None):
    return asarray(a, dtype=dtype, order="F")


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    return a.get(order=order, out=out) if isinstance(a, ndarray) else _np.asarray(a, order=order)


def empty(shape, dtype=float, order="C"):
    return ndarray(shape, dtype=dtype, order=order)


def empty_like(a, dtype=None, order="K", shape=None):
    return ndarray(_host=_poisoned(_np.empty_like(_host(a, strict=False), dtype=dtype, order=order,
                                                  shape=shape)))


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


def __getattr__(name):
    """cupy.zeros, cupy.argsort, ...: numpy's function on host arrays, its result on the device."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        func = getattr(_np, name)
    except AttributeError:
        raise AttributeError(f"module 'cupy' (the CPU stand-in) has no attribute {name!r}") from None
    if callable(func) and not isinstance(func, type):
        func = functools.wraps(func)(
            lambda *a, _f=func, **k: _device(_f(*_host(a, strict=False), **_host(k, strict=False))))
    globals()[name] = func
    return func


# ------------------------------------------------------------------ kernels
class RawModule:
    """cupy.RawModule(code=..., options=(...)) built by g++; ``-D`` options become defines."""

    def __init__(self, code=None, *, path=None, options=(), name_expressions=None, **kwargs):
        self._module = _executor.Module(code, path=path, options=options,
                                        name=_executor.kernel_names(code or Path(path).read_text())[0])

    def compile(self, log_stream=None):
        self._module.compile()

    def get_function(self, name):
        return self._module.get_function(name)


# ------------------------------------------------------------------ cupy.cuda
class _Device:
    def __init__(self, device=None):
        self.id = int(device or 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def use(self):
        pass


class CUDARuntimeError(RuntimeError):
    pass


def _properties(device=0):
    return {"name": b"CPU executor (tests/cuda_cpu)", "totalGlobalMem": 8 << 30, "major": 8,
            "minor": 0, "multiProcessorCount": 1, "maxThreadsPerBlock": 1024,
            "sharedMemPerBlock": 48 << 10, "warpSize": 32}


def _count():
    return 1 if _visible else 0


runtime = types.ModuleType("cupy.cuda.runtime")
runtime.getDeviceCount = _count
runtime.getDeviceProperties = _properties
runtime.memGetInfo = lambda: (8 << 30, 8 << 30)
runtime.deviceSynchronize = lambda: None
runtime.CUDARuntimeError = CUDARuntimeError
cuda = types.ModuleType("cupy.cuda")
cuda.runtime = runtime
cuda.Device = _Device
cuda.is_available = lambda: _visible
_pool = types.SimpleNamespace(free_all_blocks=lambda: None, used_bytes=lambda: 0,
                              total_bytes=lambda: 0)
get_default_memory_pool = lambda: _pool  # noqa: E731
sys.modules["cupy.cuda"] = cuda
sys.modules["cupy.cuda.runtime"] = runtime
