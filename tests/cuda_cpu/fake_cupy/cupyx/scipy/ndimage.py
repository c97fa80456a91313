"""cupyx.scipy.ndimage stand-in: scipy.ndimage on the host arrays of device arrays."""
import functools

import scipy.ndimage as _ndimage

import cupy as _cupy


def __getattr__(name):
    func = getattr(_ndimage, name)

    @functools.wraps(func)
    def on_device(*args, **kwargs):
        return _cupy._device(func(*_cupy._host(args), **_cupy._host(kwargs)))
    return on_device
