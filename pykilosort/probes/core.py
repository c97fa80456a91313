"""The probe: which saved channels are sorted, and where they sit.

A :class:`Probe` mirrors Kilosort's channel-map file: ``NchanTOT`` channels are saved in the binary
file, ``chanMap`` lists the ones that are electrodes (0-based, unlike MATLAB), ``xc``/``yc`` their
positions in micrometres, ``kcoords`` their shank, and ``connected`` which of them are usable.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import ProbeError

__all__ = ["Probe"]


def _as_1d(name: str, values, dtype) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and 1 in arr.shape:  # MATLAB stores vectors as (n, 1) or (1, n)
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ProbeError(f"probe.{name} must be a 1-D array, got shape {np.shape(values)}.")
    try:
        return arr.astype(dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise ProbeError(f"probe.{name} cannot be read as {np.dtype(dtype).name}: {exc}") from exc


def _as_count(value) -> int:
    """NchanTOT as int: integral numbers (also 1-element arrays, as MATLAB files give) only.

    int() alone would truncate 384.7 to 384 and accept True, silently picking a wrong channel count.
    """
    if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("+-").isdigit():
            raise ProbeError(f"probe.NchanTOT must be an integer, got {value!r}.")
        return int(value)
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all() \
            or float(arr.reshape(())) != np.round(float(arr.reshape(()))):
        raise ProbeError(f"probe.NchanTOT must be an integer, got {value!r}.")
    return int(arr.reshape(()))


@dataclass(frozen=True, eq=False)
class Probe:
    """A probe's channel map and geometry.

    Attributes (n = number of mapped channels):
        NchanTOT: number of channels saved in the binary file (e.g. 385 for Neuropixels 1.0).
        chanMap: (n,) int64, 0-based row of each mapped channel in the binary file.
        xc, yc: (n,) float64 electrode positions in micrometres.
        kcoords: (n,) int64 shank (group) of each channel.
        connected: (n,) bool, False for channels the user marks unusable (Kilosort's ``connected``).
        name: free-form label.
        NchanTOT_inferred: True when the source did not state NchanTOT and it was taken as
            max(chanMap)+1 (for error messages; not part of the probe's identity).
    """

    NchanTOT: int
    chanMap: np.ndarray
    xc: np.ndarray
    yc: np.ndarray
    kcoords: np.ndarray = None
    connected: np.ndarray = None
    name: str = field(default="")
    NchanTOT_inferred: bool = field(default=False, repr=False)

    def __post_init__(self):
        chan_map = np.asarray(self.chanMap)
        if chan_map.dtype.kind not in "iuf":  # strings would raise a bare ValueError below; a bool
            # mask would silently become rows 0/1
            raise ProbeError(f"probe.chanMap must hold integer channel rows, got {chan_map.dtype} values"
                             " (for a boolean mask use np.flatnonzero(mask)).")
        if chan_map.size and not np.all(np.isfinite(chan_map.astype(float))):
            raise ProbeError("probe.chanMap contains NaN or inf; it must list integer channel rows.")
        if chan_map.size and np.any(chan_map.astype(float) != np.round(chan_map.astype(float))):
            raise ProbeError("probe.chanMap contains non-integer values; it must list integer channel rows.")
        n = chan_map.size
        kcoords = np.zeros(n) if self.kcoords is None else self.kcoords
        connected = np.ones(n, bool) if self.connected is None else self.connected
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("chanMap", _as_1d("chanMap", chan_map, np.int64))
        set_("xc", _as_1d("xc", self.xc, np.float64))
        set_("yc", _as_1d("yc", self.yc, np.float64))
        set_("kcoords", _as_1d("kcoords", np.nan_to_num(np.asarray(kcoords, float)), np.int64))
        set_("connected", _as_1d("connected", connected, bool))
        set_("NchanTOT", _as_count(self.NchanTOT))
        self.validate()
        for name in ("chanMap", "xc", "yc", "kcoords", "connected"):
            getattr(self, name).flags.writeable = False  # edits would bypass validation and key()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ProbeError` naming the first inconsistency found."""
        n = self.chanMap.size
        if n == 0:
            raise ProbeError("probe has no channels: chanMap is empty.")
        for name in ("xc", "yc", "kcoords", "connected"):
            m = getattr(self, name).size
            if m != n:
                raise ProbeError(
                    f"probe.{name} has {m} entries but chanMap has {n}; every channel needs one "
                    f"{name} value (same order as chanMap).")
        for name in ("xc", "yc"):
            bad = ~np.isfinite(getattr(self, name))
            if bad.any():
                raise ProbeError(
                    f"probe.{name} is not finite for channel(s) {np.flatnonzero(bad)[:10].tolist()}; "
                    "give every channel a real position in micrometres.")
        if self.NchanTOT < 1:
            raise ProbeError(f"probe.NchanTOT must be >= 1, got {self.NchanTOT}.")
        uniq, counts = np.unique(self.chanMap, return_counts=True)
        if (counts > 1).any():
            raise ProbeError(
                f"probe.chanMap lists channel(s) {uniq[counts > 1][:10].tolist()} more than once; "
                "each saved channel may appear at most once.")
        if self.chanMap.min() < 0:
            raise ProbeError(f"probe.chanMap has negative entries (min {self.chanMap.min()}); "
                             "it must hold 0-based rows of the binary file.")
        if self.chanMap.max() >= self.NchanTOT:
            hint = ""
            if self.looks_one_based():
                hint = (" It looks 1-based (MATLAB style: it runs 1..NchanTOT): subtract 1, or load the "
                        "Kilosort .mat file with pykilosort.load_probe(), which converts it.")
            raise ProbeError(
                f"probe.chanMap has entry {self.chanMap.max()} but the file holds only NchanTOT="
                f"{self.NchanTOT} channels (valid rows are 0..{self.NchanTOT - 1}).{hint}")

    def looks_one_based(self) -> bool:
        """True when chanMap has no 0 and reaches NchanTOT: the MATLAB 1-based convention."""
        return bool(self.chanMap.min() >= 1 and self.chanMap.max() == self.NchanTOT)

    # ------------------------------------------------------------------ views
    @property
    def Nchan(self) -> int:
        """Number of mapped channels (before good-channel selection)."""
        return int(self.chanMap.size)

    def subset(self, mask) -> "Probe":
        """A probe keeping only the channels where ``mask`` (shape (n,), bool) is True."""
        mask = np.asarray(mask, bool)
        if mask.shape != self.chanMap.shape:
            raise ProbeError(f"subset mask has shape {mask.shape}, expected {self.chanMap.shape}.")
        return Probe(NchanTOT=self.NchanTOT, chanMap=self.chanMap[mask], xc=self.xc[mask],
                     yc=self.yc[mask], kcoords=self.kcoords[mask], connected=self.connected[mask],
                     name=self.name)

    def connected_only(self) -> "Probe":
        """The channels Kilosort sorts: those marked connected (MATLAB loadChanMap drops the rest)."""
        if not self.connected.any():
            raise ProbeError("probe marks no channel as connected; nothing would be sorted.")
        return self.subset(self.connected)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """A JSON-serialisable dict (lists), inverse of :meth:`from_dict`."""
        return {"NchanTOT": self.NchanTOT, "chanMap": self.chanMap.tolist(), "xc": self.xc.tolist(),
                "yc": self.yc.tolist(), "kcoords": self.kcoords.tolist(),
                "connected": self.connected.tolist(), "name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> "Probe":
        return cls(**{k: d[k] for k in ("NchanTOT", "chanMap", "xc", "yc", "kcoords", "connected")},
                   name=d.get("name", ""))

    def key(self) -> str:
        """A content hash, used in checkpoint keys: any change of map or geometry changes it."""
        h = hashlib.sha256()
        h.update(str(self.NchanTOT).encode())
        for arr in (self.chanMap, self.xc, self.yc, self.kcoords, self.connected):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    def __eq__(self, other) -> bool:
        return isinstance(other, Probe) and self.key() == other.key()

    __hash__ = None

    def __repr__(self) -> str:
        return (f"Probe(name={self.name!r}, NchanTOT={self.NchanTOT}, Nchan={self.Nchan}, "
                f"connected={int(self.connected.sum())}, shanks={np.unique(self.kcoords).size})")
