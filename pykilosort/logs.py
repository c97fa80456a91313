"""Logging: library loggers stay silent (NullHandler) unless the user opts in.

:func:`add_default_handler` prints to the console; :func:`file_handler` is what ``run()`` attaches
to write ``pykilosort.log`` in the output folder.
"""
from __future__ import annotations

import logging
import platform
import sys

__all__ = ["add_default_handler", "file_handler", "log_environment", "peak_rss_mib",
           "reset_peak_rss"]

_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
_DATEFMT = "%H:%M:%S"


def add_default_handler(level="INFO", *, logger_name: str = "pykilosort") -> logging.Handler:
    """Print pykilosort's log records at ``level`` and above to stderr; returns the handler."""
    logger = logging.getLogger(logger_name)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    handler.setLevel(level)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(handler.level)
    return handler


def file_handler(path, level=logging.DEBUG) -> logging.FileHandler:
    """A handler writing every record to ``path`` (appending: resumed runs keep their history)."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s " + _FORMAT.split(" ", 1)[1], None))
    handler.setLevel(level)
    return handler


# the process's peak before the last reset_peak_rss(): the kernel forgets it, we do not
_peak_before_reset_mib = 0.0


def peak_rss_mib(*, since_reset: bool = False) -> float:
    """Peak resident memory of this process, MiB: over its whole life, or with ``since_reset``
    since the last :func:`reset_peak_rss` that succeeded (a pipeline step's own peak).

    On Linux the kernel's high-water mark of this process's own address space (VmHWM): ru_maxrss
    would also count the parent's resident memory at the fork, carried over the exec, so a run
    launched from a large process (a notebook, a benchmark that generated the recording) would
    report the parent's peak. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS), which cannot be
    reset; NaN on Windows.
    """
    hwm = _vm_hwm_mib()
    if hwm is None:
        return _ru_maxrss_mib()
    return hwm if since_reset else max(hwm, _peak_before_reset_mib)


def reset_peak_rss() -> bool:
    """Start a new high-water mark, so that ``peak_rss_mib(since_reset=True)`` is the peak from
    now on (Linux >= 4.0: writing 5 to /proc/self/clear_refs). The lifetime peak is kept. Returns
    False where the kernel offers no reset: step peaks are then the process's peak so far."""
    global _peak_before_reset_mib
    hwm = _vm_hwm_mib()
    if hwm is None:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    _peak_before_reset_mib = max(_peak_before_reset_mib, hwm)
    return True


def _vm_hwm_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _ru_maxrss_mib() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def log_environment(logger: logging.Logger, backend) -> None:
    """Log versions and the compute device, for reproducibility."""
    import numba
    import numpy
    import scipy

    from . import __version__

    logger.info("pykilosort %s, Python %s on %s", __version__, platform.python_version(),
                platform.platform())
    logger.info("numpy %s, scipy %s, numba %s", numpy.__version__, scipy.__version__,
                numba.__version__)
    logger.info("device: %s", backend.describe())


def progress(iterable, *, desc: str, total: int | None = None, unit: str = "batch"):
    """A tqdm bar over batches (hidden when stderr is not a terminal, or PYKILOSORT_PROGRESS=0).
    ``iterable=None`` gives a bar to advance by hand (``bar.update(n)``, then ``bar.close()``)."""
    import os

    from tqdm.auto import tqdm

    env = os.environ.get("PYKILOSORT_PROGRESS")
    disable = None if env is None else env == "0"
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False)
