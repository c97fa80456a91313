"""pykilosort: a faithful Python port of the Kilosort2 spike sorter (with its 2.5 drift correction).

Importing the package is cheap and never needs CuPy; the heavy modules load on first use.
"""
from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> module that defines it (loaded lazily, PEP 562)
_LAZY = {
    "run": "main", "load_context": "context", "Context": "context", "Bunch": "utils",
    "add_default_handler": "logs", "Probe": "probes", "load_probe": "probes",
    "get_probe": "probes", "default_params": "params", "resolve_params": "params",
    "RawData": "io", "make_synthetic_recording": "synthetic", "KilosortError": "errors",
    "load_sorting": "export", "Sorting": "export", "sort_many": "many", "read_jobs": "many",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'pykilosort' has no attribute {name!r}")
