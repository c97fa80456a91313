"""Probes: the channel map and geometry type, file loaders and presets."""
from .core import Probe
from .loaders import load_probe
from .presets import PRESETS, get_probe, linear, neuropixels1, neuropixels2

__all__ = ["Probe", "load_probe", "get_probe", "neuropixels1", "neuropixels2", "linear", "PRESETS"]
