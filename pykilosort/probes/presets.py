"""Built-in probes: Neuropixels 1.0 / 2.0 (bank 0) and a single-column linear probe.

The Neuropixels presets reproduce the channel-map files that ship with Kilosort
(``configFiles/neuropixPhase3B1_kilosortChanMap.mat`` and, from v2.5, ``NP2_kilosortChanMap.mat``),
converted to 0-based ``chanMap``. The test suite compares them with arrays derived from those files.

Note that the Kilosort NP1.0 file is a mirror image of the layout SpikeGLX/probeinterface report for
the same electrodes (x reflected, y shifted by one row). Kilosort only uses distances between sites,
which a reflection preserves, so sorting is unaffected; a probe read from a SpikeGLX ``.meta`` file keeps
probeinterface's coordinates.
"""
from __future__ import annotations

import difflib
from typing import Callable

import numpy as np

from ..errors import ProbeError
from .core import Probe

__all__ = ["neuropixels1", "neuropixels2", "linear", "get_probe", "PRESETS"]

# Neuropixels probes record 384 electrodes and SpikeGLX saves one more row, the digital sync word.
_NP_MAPPED = 384
_NP_SAVED = 385

# NP1.0 bank 0: sites sit two per row, 20 um apart vertically, and the row pattern of x positions
# repeats every two rows (the staggered "checkerboard"): values from Kilosort's 3B1 channel-map file.
_NP1_X_CYCLE = (43.0, 11.0, 59.0, 27.0)
_NP1_ROW_PITCH = 20.0
# Channel 192 (1-based) of bank 0 is wired to the internal reference electrode on NP1.0 (phase 3B):
# Kilosort's file marks it connected = 0, so it is never sorted.
_NP1_REFERENCE_CHANNEL = 191

# NP2.0 single shank, bank 0: two columns 32 um apart, rows 15 um apart, no stagger, no reference site.
_NP2_X_CYCLE = (0.0, 32.0)
_NP2_ROW_PITCH = 15.0


def neuropixels1(*, NchanTOT: int = _NP_SAVED) -> Probe:
    """Neuropixels 1.0 (phase 3B), bank 0, as in Kilosort's ``neuropixPhase3B1_kilosortChanMap.mat``.

    384 mapped channels (chanMap 0..383) out of ``NchanTOT`` saved ones (385 by default: the last
    row of a SpikeGLX ``.ap.bin`` is the sync channel, saved but not mapped). Channel 191 is the
    reference electrode and is marked ``connected=False``. Positions (um): x cycles 43, 11, 59, 27;
    y = 20, 20, 40, 40, ..., 3840. ``kcoords`` are all 1 (one shank).

    Pass ``NchanTOT=384`` for files saved without the sync channel.
    """
    n = _NP_MAPPED
    connected = np.ones(n, bool)
    connected[_NP1_REFERENCE_CHANNEL] = False
    return Probe(NchanTOT=NchanTOT, chanMap=np.arange(n),
                 xc=np.resize(_NP1_X_CYCLE, n),
                 yc=_NP1_ROW_PITCH * (np.arange(n) // 2 + 1),
                 kcoords=np.ones(n), connected=connected, name="neuropixels1")


def neuropixels2(*, NchanTOT: int = _NP_SAVED) -> Probe:
    """Neuropixels 2.0 single shank, bank 0, as in Kilosort 2.5's ``NP2_kilosortChanMap.mat``.

    384 mapped channels (chanMap 0..383) out of ``NchanTOT`` (385 by default, sync channel last).
    Positions (um): x alternates 0, 32; y = 0, 0, 15, 15, ..., 2865. All channels connected,
    ``kcoords`` all 1.
    """
    n = _NP_MAPPED
    return Probe(NchanTOT=NchanTOT, chanMap=np.arange(n),
                 xc=np.resize(_NP2_X_CYCLE, n),
                 yc=_NP2_ROW_PITCH * (np.arange(n) // 2),
                 kcoords=np.ones(n), connected=np.ones(n, bool), name="neuropixels2")


def linear(n: int, pitch: float = 20.0, *, NchanTOT: int | None = None) -> Probe:
    """A single column of ``n`` sites ``pitch`` um apart (x = 0, y = 0, pitch, ..., (n-1)*pitch).

    chanMap is 0..n-1, all connected, ``kcoords`` all 1. ``NchanTOT`` defaults to ``n``; give a
    larger value when the file also saves non-electrode channels after the ``n`` electrodes.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ProbeError(f"linear(n): n must be a positive integer number of sites, got {n!r}.")
    pitch = float(pitch)
    if not np.isfinite(pitch) or pitch <= 0:
        raise ProbeError(f"linear(pitch=...): pitch must be a positive distance in um, got {pitch!r}.")
    n = int(n)
    return Probe(NchanTOT=n if NchanTOT is None else NchanTOT, chanMap=np.arange(n),
                 xc=np.zeros(n), yc=pitch * np.arange(n), kcoords=np.ones(n),
                 connected=np.ones(n, bool), name=f"linear{n}")


# name -> zero-argument factory (keyword NchanTOT accepted). Aliases point at the same factory.
PRESETS: dict[str, Callable[..., Probe]] = {
    "neuropixels1": neuropixels1,
    "neuropixels2": neuropixels2,
    "np1": neuropixels1,
    "np2": neuropixels2,
}


def normalise_preset_name(name: str) -> str:
    """Lower-case and drop separators, so 'Neuropixels-1', 'NP_1' and 'np 1' all match."""
    return "".join(ch for ch in str(name).lower() if ch not in " -_.")


def get_probe(name: str) -> Probe:
    """The preset probe called ``name`` (case and '-', '_', '.', ' ' ignored); see :data:`PRESETS`.

    Raises :class:`ProbeError` with close-match suggestions for an unknown name.
    """
    key = normalise_preset_name(name)
    if key in PRESETS:
        return PRESETS[key]()
    raise ProbeError(f"unknown probe preset {name!r}.{_did_you_mean(name)} "
                     f"Known presets: {', '.join(sorted(PRESETS))}; "
                     "use linear(n, pitch) for a single-column probe.")


def _did_you_mean(name: str) -> str:
    """' Did you mean ...?' for presets close to ``name``, or '' when none is close."""
    close = difflib.get_close_matches(normalise_preset_name(name), list(PRESETS), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
