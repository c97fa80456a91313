"""Build a :class:`Probe` from whatever the user has: a preset name, a probe file, or an object.

Accepted sources (see :func:`load_probe`):

* a :class:`Probe` (returned as is);
* a preset name: ``'neuropixels1'``, ``'neuropixels2'``, ``'np1'``, ``'np2'``;
* a Kilosort channel-map ``.mat`` file (MATLAB, 1-based ``chanMap``);
* a phy/klusta ``.prb`` file or a probeinterface ``.json`` file (read with probeinterface);
* a SpikeGLX ``.meta`` file (or the ``.bin`` next to one), read with ``probeinterface.read_spikeglx``;
* a ``probeinterface.Probe`` / ``ProbeGroup`` object;
* a dict or attribute object with Kilosort-style keys, such as the ``Bunch`` SpikeInterface builds.

``n_channels`` is the number of channels saved in the binary file (``NchanTOT``). Where the source
does not state it (``.prb``, ``.json``, ``.mat`` files without ``NchanTOT``, dicts without it, presets,
which assume 385) ``n_channels`` supplies it; where the source does state it (a :class:`Probe`, ``.mat``
or dict ``NchanTOT``, SpikeGLX ``nSavedChans``) the two must agree.
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import ProbeError
from .core import Probe
from .presets import PRESETS, _did_you_mean, normalise_preset_name

__all__ = ["load_probe", "from_mapping", "from_probeinterface", "load_kilosort_mat", "load_prb",
           "load_probeinterface_json", "load_spikeglx_meta", "ProbeFileNotFoundError",
           "UnsupportedProbeSourceError", "PROBE_FILE_SUFFIXES"]

logger = logging.getLogger(__name__)

PROBE_FILE_SUFFIXES = (".mat", ".prb", ".json", ".meta")


class ProbeFileNotFoundError(ProbeError, FileNotFoundError):
    """A probe file that does not exist (catchable as ProbeError or FileNotFoundError)."""


class UnsupportedProbeSourceError(ProbeError, TypeError):
    """Something that load_probe cannot turn into a probe (catchable as ProbeError or TypeError)."""


_ACCEPTED_FORMS = (
    "a pykilosort Probe; a preset name (" + ", ".join(sorted(PRESETS)) + "); a path to a Kilosort "
    "channel-map .mat, a .prb, a probeinterface .json or a SpikeGLX .meta file; a probeinterface "
    "Probe/ProbeGroup; or a dict/attribute object with NchanTOT, chanMap (0-based), xc, yc "
    "[, kcoords, connected]")


# ====================================================================== entry point
def load_probe(source, *, n_channels: int | None = None) -> Probe:
    """Return the :class:`Probe` described by ``source`` (see the module docstring for the forms).

    Args:
        source: a Probe, preset name, file path (str or Path), probeinterface object, or mapping.
        n_channels: channels saved in the binary file (NchanTOT), used where ``source`` does not
            say and checked where it does.

    Raises:
        ProbeError: inconsistent or unreadable input; its message names the problem and a fix.
        ProbeFileNotFoundError: a path that does not exist (also a ProbeError).
        UnsupportedProbeSourceError: an object of a type that cannot describe a probe.
    """
    n_channels = _check_n_channels(n_channels)
    if isinstance(source, Probe):
        _agree_nchantot(source.NchanTOT, n_channels, "the Probe given")
        return source
    if isinstance(source, (str, Path)):
        return _load_path_or_preset(source, n_channels)
    if _is_probeinterface(source):
        return from_probeinterface(source, n_channels=n_channels)
    if isinstance(source, Mapping) or _has_any_field(source, _ALL_KEYS):
        return from_mapping(source, n_channels=n_channels)
    raise UnsupportedProbeSourceError(
        f"cannot make a probe from a {type(source).__name__}. Give {_ACCEPTED_FORMS}.")


def _load_path_or_preset(source, n_channels: int | None) -> Probe:
    path = Path(source).expanduser()
    key = normalise_preset_name(source)
    # A bare word naming a preset wins over a file of that name only when no such file exists.
    if key in PRESETS and not path.exists():
        probe = PRESETS[key]() if n_channels is None else PRESETS[key](NchanTOT=n_channels)
        logger.debug("probe preset %r: %r", source, probe)
        return probe
    if not path.exists():
        hint = ""
        if not path.suffix:
            hint = f" It is not a probe preset either.{_did_you_mean(str(source))}"
        raise ProbeFileNotFoundError(f"probe file not found: {str(path)!r}.{hint}")
    suffix = path.suffix.lower()
    if suffix == ".bin":  # SpikeGLX data file: its geometry lives in the .meta next to it
        meta = path.with_suffix(".meta")
        if not meta.exists():
            raise ProbeFileNotFoundError(
                f"{str(path)!r} is a binary file; the probe is read from its SpikeGLX .meta "
                f"file, but {str(meta)!r} does not exist. Give a channel-map file instead.")
        path, suffix = meta, ".meta"
    if path.is_dir():
        raise ProbeError(f"{str(path)!r} is a folder; give a probe file "
                         f"({', '.join(PROBE_FILE_SUFFIXES)}).")
    loaders = {".mat": load_kilosort_mat, ".prb": load_prb, ".json": load_probeinterface_json,
               ".meta": load_spikeglx_meta}
    if suffix not in loaders:
        raise ProbeError(
            f"unknown probe file type {path.suffix or '(no extension)'!r} for {str(path)!r}; "
            f"supported extensions: {', '.join(PROBE_FILE_SUFFIXES)} (and a SpikeGLX .bin with "
            "its .meta beside it).")
    return loaders[suffix](path, n_channels=n_channels)


# ====================================================================== NchanTOT helpers
def _check_n_channels(n_channels) -> int | None:
    if n_channels is None:
        return None
    if isinstance(n_channels, bool) or not isinstance(n_channels, (int, np.integer)) or n_channels < 1:
        raise ProbeError(f"n_channels must be a positive integer (channels saved in the binary "
                         f"file), got {n_channels!r}.")
    return int(n_channels)


def _agree_nchantot(stated: int, n_channels: int | None, where: str) -> int:
    """``stated`` NchanTOT, after checking it equals ``n_channels`` when that is given too."""
    if n_channels is not None and n_channels != stated:
        hint = ""
        if {stated, n_channels} == {384, 385}:
            hint = (" Neuropixels files from SpikeGLX hold 385 channels (384 electrodes + the sync "
                    "channel); files written by some tools drop the sync channel and hold 384.")
        raise ProbeError(f"{where} says NchanTOT={stated} but n_channels={n_channels} was given; "
                         f"they must agree (both count the channels saved in the binary file).{hint}")
    return stated


def _default_nchantot(chan_map0: np.ndarray, n_channels: int | None, where: str) -> int:
    """NchanTOT when the source does not state it: ``n_channels``, else max(chanMap)+1.

    Kilosort's MATLAB loadChanMap defaults to numel(chanMap) (sum(connected) when a connected vector
    exists), which is too small whenever some saved channel is unmapped or unconnected; max+1 is the
    smallest count that holds every mapped row.
    """
    if n_channels is not None:
        return n_channels
    chan_map0 = np.asarray(chan_map0, float)
    if chan_map0.size == 0 or not np.all(np.isfinite(chan_map0)):
        return 1  # let Probe's validation report the real problem
    guess = int(chan_map0.max()) + 1
    logger.info("%s does not give NchanTOT; assuming max(chanMap)+1 = %d. Pass n_channels= if "
                "the binary file holds more channels (e.g. 385 with a Neuropixels sync channel).",
                where, guess)
    return guess


def _scalar_int(value, name: str, where: str) -> int:
    """A MATLAB-ish scalar (python number, 0-d/1-element array) as int, else ProbeError."""
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise ProbeError(f"{where}: {name} must be a single integer, got {value!r}.")
    v = float(arr.reshape(()))
    if not v.is_integer():
        raise ProbeError(f"{where}: {name} must be an integer, got {v}.")
    return int(v)


# ====================================================================== dict / Bunch
# Accepted spellings, preferred first: Kilosort/IBL names, then MouseLand-develop ones. SpikeInterface's
# Kilosort wrapper sets both families. Keys NOT read (ignored): Nchans / n_channels (= len(chanMap)),
# sample2volt (gain, not geometry), channel_labels (IBL bad-channel labels), shank (None there),
# chanMap0ind, fs.
_NCHANTOT_KEYS = ("NchanTOT", "n_channels_tot")
_CHANMAP_KEYS = ("chanMap", "channel_map")
_XC_KEYS = ("xc", "xcoords")
_YC_KEYS = ("yc", "ycoords")
_KCOORDS_KEYS = ("kcoords", "channel_groups")
_CONNECTED_KEYS = ("connected",)
_ALL_KEYS = _NCHANTOT_KEYS + _CHANMAP_KEYS + _XC_KEYS + _YC_KEYS + _KCOORDS_KEYS + _CONNECTED_KEYS


def _get_field(obj, key):
    """obj[key] for mappings, obj.key otherwise; a missing or None value reads as None."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _has_any_field(obj, keys) -> bool:
    return any(_get_field(obj, k) is not None for k in keys)


def _first_field(obj, keys):
    """(key, value) of the first spelling in ``keys`` that ``obj`` has, else (None, None)."""
    for k in keys:
        v = _get_field(obj, k)
        if v is not None:
            return k, v
    return None, None


def from_mapping(obj, *, n_channels: int | None = None, where: str = "probe dict") -> Probe:
    """A Probe from a dict or attribute object holding a 0-based channel map.

    Reads NchanTOT|n_channels_tot, chanMap|channel_map (0-based, shape (n,)), xc|xcoords,
    yc|ycoords (shape (n,), um), and optionally kcoords|channel_groups, connected, name.
    A 1-based map is NOT shifted: Probe validation rejects it with a "looks 1-based" hint.
    """
    fields = {}
    missing = []
    for name, keys in (("chanMap", _CHANMAP_KEYS), ("xc", _XC_KEYS), ("yc", _YC_KEYS)):
        key, fields[name] = _first_field(obj, keys)
        if key is None:
            missing.append(" or ".join(repr(k) for k in keys))
    nkey, nchantot = _first_field(obj, _NCHANTOT_KEYS)
    if nkey is None and n_channels is None:
        missing.append(" or ".join(repr(k) for k in _NCHANTOT_KEYS) + " (or pass n_channels=)")
    if missing:
        raise ProbeError(f"{where} is missing required key(s): {'; '.join(missing)}. "
                         "A probe dict needs NchanTOT, chanMap (0-based), xc, yc "
                         "[, kcoords, connected].")
    _warn_if_spellings_disagree(obj, where)
    if nkey is not None:
        nchantot = _agree_nchantot(_scalar_int(nchantot, nkey, where), n_channels, where)
    else:
        nchantot = n_channels
    kcoords = _first_field(obj, _KCOORDS_KEYS)[1]
    connected = _first_field(obj, _CONNECTED_KEYS)[1]
    name = _get_field(obj, "name")
    return Probe(NchanTOT=nchantot, chanMap=fields["chanMap"], xc=fields["xc"], yc=fields["yc"],
                 kcoords=kcoords, connected=connected,
                 name=name if isinstance(name, str) else "")


def _warn_if_spellings_disagree(obj, where: str) -> None:
    """Both spellings present but different is almost surely a stale copy: say which one is used."""
    for keys in (_NCHANTOT_KEYS, _CHANMAP_KEYS, _XC_KEYS, _YC_KEYS, _KCOORDS_KEYS):
        values = [(k, _get_field(obj, k)) for k in keys]
        values = [(k, v) for k, v in values if v is not None]
        if len(values) == 2:
            try:
                a, b = (np.asarray(v, float).ravel() for _, v in values)
            except (TypeError, ValueError):
                continue  # not numeric: Probe's validation will say so about the one used
            if a.shape != b.shape or not np.array_equal(a, b):
                logger.warning("%s: %r and %r differ; using %r.", where, values[0][0],
                               values[1][0], values[0][0])


# ====================================================================== Kilosort .mat
def load_kilosort_mat(path, *, n_channels: int | None = None) -> Probe:
    """Read a Kilosort channel-map ``.mat`` file (MATLAB v5/v7).

    Variables (vectors may be (n,1) or (1,n)):
        chanMap   (n,) 1-based rows of the binary file (required; converted to 0-based);
        chanMap0ind (n,) optional, must equal chanMap-1;
        xcoords, ycoords (n,) um; when absent, Kilosort's defaults x=0, y=1..n are used;
        kcoords (n,) shank, or ``shankInd`` as in Kilosort's Neuropixels files; default 1;
        connected (n,) 0/1, default all 1 (kept in Probe.connected; connected_only() drops them);
        NchanTOT optional; else ``n_channels``; else max(chanMap)+1;
        name optional (else the file name). ``fs`` and other variables are ignored.
    A struct saved as a single variable holding these fields is unwrapped.
    """
    path = Path(path)
    where = f"channel-map file {str(path)!r}"
    cm = _read_mat(path)
    if "chanMap" not in cm:
        raise ProbeError(f"{where} has no 'chanMap' variable (found: {sorted(cm) or 'nothing'}); "
                         "a Kilosort channel map needs chanMap (1-based), xcoords, ycoords.")
    chan_map1 = _mat_vector(cm["chanMap"], "chanMap", where)
    n = chan_map1.size
    if n and np.nanmin(chan_map1) < 1:
        raise ProbeError(
            f"{where}: chanMap contains {np.nanmin(chan_map1):g}, but Kilosort .mat channel maps are "
            "1-based (MATLAB). If yours is 0-based, save chanMap = chanMap0ind + 1.")
    chan_map0 = chan_map1 - 1  # float, so uint16 files cannot wrap around
    if "chanMap0ind" in cm:
        zero_ind = _mat_vector(cm["chanMap0ind"], "chanMap0ind", where)
        if zero_ind.shape != chan_map0.shape or not np.array_equal(zero_ind, chan_map0):
            raise ProbeError(f"{where}: chanMap0ind does not equal chanMap-1; the file is "
                             "inconsistent. Fix or delete chanMap0ind.")
    xc = _mat_vector(cm["xcoords"], "xcoords", where) if "xcoords" in cm else np.zeros(n)
    yc = _mat_vector(cm["ycoords"], "ycoords", where) if "ycoords" in cm else np.arange(1.0, n + 1)
    kkey = "kcoords" if "kcoords" in cm else "shankInd" if "shankInd" in cm else None
    kcoords = _mat_vector(cm[kkey], kkey, where) if kkey else np.ones(n)
    connected = _mat_vector(cm["connected"], "connected", where) != 0 if "connected" in cm else None
    for absent in ("xcoords", "ycoords"):
        if absent not in cm:
            logger.warning("%s has no %s; using Kilosort's default (x=0, y=1..n).", where, absent)
    if "NchanTOT" in cm:
        nchantot = _agree_nchantot(_scalar_int(cm["NchanTOT"], "NchanTOT", where), n_channels, where)
    else:
        nchantot = _default_nchantot(chan_map0, n_channels, where)
    name = cm.get("name")
    return Probe(NchanTOT=nchantot, chanMap=chan_map0, xc=xc, yc=yc, kcoords=kcoords,
                 connected=connected, name=name.strip() if isinstance(name, str) else path.stem,
                 NchanTOT_inferred="NchanTOT" not in cm and n_channels is None)


def _read_mat(path: Path) -> dict:
    """The variables of a MATLAB file as a dict, squeezed (structs become dicts)."""
    import scipy.io

    try:
        raw = scipy.io.loadmat(str(path), simplify_cells=True)
    except NotImplementedError as exc:  # scipy's answer to HDF5-based v7.3 files
        raise ProbeError(
            f"{str(path)!r} is a MATLAB v7.3 (HDF5) file, which scipy cannot read. Re-save it in "
            "MATLAB with save(filename, 'chanMap', 'xcoords', 'ycoords', 'kcoords', 'connected', "
            "'-v7').") from exc
    except Exception as exc:  # corrupt or not a MATLAB file at all
        raise ProbeError(f"cannot read {str(path)!r} as a MATLAB .mat file: {exc}") from exc
    cm = {k: v for k, v in raw.items() if not k.startswith("__")}
    if "chanMap" not in cm and len(cm) == 1:
        (only,) = cm.values()
        if isinstance(only, dict) and "chanMap" in only:  # save(f, 'cmStruct') of a struct
            cm = only
    return cm


def _mat_vector(value, name: str, where: str) -> np.ndarray:
    """A numeric MATLAB vector (scalar, (n,), (n,1) or (1,n)) as a float64 (n,) array."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ProbeError(f"{where}: {name} must be numeric, got {arr.dtype} values.")
    arr = np.atleast_1d(arr.astype(np.float64))
    if arr.ndim != 1:
        arr = np.squeeze(arr)
        if arr.ndim != 1:
            raise ProbeError(f"{where}: {name} must be a vector, got shape {np.shape(value)}.")
    return arr


# ====================================================================== probeinterface
def _is_probeinterface(obj) -> bool:
    try:
        import probeinterface as pi
    except ImportError:  # without probeinterface, no object can be one of its probes
        return False
    return isinstance(obj, (pi.Probe, pi.ProbeGroup))


def _import_probeinterface(what: str):
    try:
        import probeinterface
    except ImportError as exc:
        raise ProbeError(f"reading {what} needs the probeinterface package "
                         "(pip install probeinterface).") from exc
    return probeinterface


def from_probeinterface(obj, *, n_channels: int | None = None, name: str = "") -> Probe:
    """A Probe from a ``probeinterface.Probe`` or ``ProbeGroup``.

    For every contact, in probe then contact order: chanMap = device_channel_indices (contacts wired
    to -1 are not recorded and are dropped), (xc, yc) = contact_positions, kcoords = 1-based rank of
    its (probe, shank) pair (probe order, then shank order). NchanTOT = ``n_channels`` if given, else
    max(chanMap)+1. All kept contacts are connected.
    """
    pi = _import_probeinterface("a probeinterface probe")
    probes = [obj] if isinstance(obj, pi.Probe) else list(obj.probes)
    if not probes:
        raise ProbeError("the probeinterface ProbeGroup holds no probe.")
    chan, pos, groups = [], [], []
    for i, p in enumerate(probes):
        label = f"probe {i}" + (f" ({p.name})" if p.name else "")
        if p.device_channel_indices is None:
            raise ProbeError(
                f"probeinterface {label} has no wiring (device_channel_indices is not set), so "
                "which row of the binary file each contact is in is unknown. Set it with "
                "probe.set_device_channel_indices(indices) (e.g. np.arange(n) when contacts are "
                "saved in contact order), or use a ProbeGroup's set_global_device_channel_indices().")
        if p.ndim != 2:
            raise ProbeError(f"probeinterface {label} is {p.ndim}-D; Kilosort needs 2-D positions "
                             "(convert with probe.to_2d()).")
        chan.append(np.asarray(p.device_channel_indices, np.int64))
        pos.append(np.asarray(p.contact_positions, np.float64))
        shanks = p.shank_ids if p.shank_ids is not None else np.full(p.get_contact_count(), "")
        groups.extend((i, str(s)) for s in shanks)
    chan_map = np.concatenate(chan)
    positions = np.concatenate(pos)
    kcoords = _group_labels(groups)
    wired = chan_map >= 0
    if not wired.any():
        raise ProbeError("no contact of the probeinterface probe is wired (all "
                         "device_channel_indices are -1).")
    if not wired.all():
        logger.info("dropping %d contact(s) wired to -1 (not recorded).", int((~wired).sum()))
    where = "the probeinterface probe"
    nchantot = _default_nchantot(chan_map[wired], n_channels, where)
    if not name:
        names = [p.name or p.model_name or "" for p in probes]
        name = "+".join(n for n in names if n)
    return Probe(NchanTOT=nchantot, chanMap=chan_map[wired], xc=positions[wired, 0],
                 yc=positions[wired, 1], kcoords=kcoords[wired], name=name,
                 NchanTOT_inferred=n_channels is None)


def _group_labels(groups: list) -> np.ndarray:
    """(n,) int64 labels 1, 2, ... for (probe index, shank id) pairs, in probe then shank order.

    Shank ids are strings in probeinterface ('' when the probe has none); numeric ones sort by value
    so that shank '10' comes after shank '2'.
    """
    def sort_key(group):
        probe_index, shank = group
        return (probe_index, 0, int(shank), "") if shank.isdigit() else (probe_index, 1, 0, shank)

    label = {g: i + 1 for i, g in enumerate(sorted(set(groups), key=sort_key))}
    return np.array([label[g] for g in groups], np.int64)


def load_prb(path, *, n_channels: int | None = None) -> Probe:
    """Read a phy/klusta ``.prb`` file (Python source; probeinterface executes it).

    Each entry of ``channel_groups`` becomes one group (kcoords 1, 2, ...); its ``channels`` are the
    0-based rows of the binary file and ``geometry`` their (x, y). NchanTOT = ``n_channels`` if
    given, else max(channel)+1.
    """
    pi = _import_probeinterface("a .prb file")
    try:
        group = pi.read_prb(path)
    except Exception as exc:  # the file is Python: any error may come out of it
        raise ProbeError(f"cannot read {str(path)!r} as a .prb probe file "
                         f"({type(exc).__name__}: {exc}). It must define channel_groups = "
                         "{group: {'channels': [...], 'geometry': {channel: (x, y)}}}.") from exc
    return from_probeinterface(group, n_channels=n_channels, name=Path(path).stem)


def load_probeinterface_json(path, *, n_channels: int | None = None) -> Probe:
    """Read a probeinterface ``.json`` file (``probeinterface.write_probeinterface`` output).

    A JSON object with Kilosort keys (``json.dump(probe.to_dict(), f)``) is read as a probe dict.
    """
    try:
        content = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProbeError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if isinstance(content, dict) and _has_any_field(content, _CHANMAP_KEYS):
        # Probe.to_dict() written with json.dump: Kilosort-style keys, not probeinterface's schema
        return from_mapping(content, n_channels=n_channels, where=f"probe file {str(path)!r}")
    pi = _import_probeinterface("a probeinterface .json file")
    try:
        group = pi.read_probeinterface(path)
    except Exception as exc:
        raise ProbeError(f"cannot read {str(path)!r} as a probeinterface .json file "
                         f"({type(exc).__name__}: {exc}).") from exc
    return from_probeinterface(group, n_channels=n_channels, name=Path(path).stem)


# ====================================================================== SpikeGLX .meta
# Part number to assume when a meta file names none (older SpikeGLX; phase 3B NP1.0 files only carry
# imDatPrb_type). Keys are imDatPrb_type values, which equal the imroTbl header's first field.
_PART_NUMBER_BY_TYPE = {"0": "NP1000", "21": "NP2000", "24": "NP2010"}


def load_spikeglx_meta(path, *, n_channels: int | None = None) -> Probe:
    """Read the probe of a SpikeGLX recording from its ``.meta`` file.

    Geometry and the saved-channel subset come from ``probeinterface.read_spikeglx`` (Neuropixels 1.0,
    2.0 and others it knows): chanMap = position of each electrode among the saved channels, so the
    sync channel (saved last) is not mapped. NchanTOT = ``nSavedChans``. kcoords numbers the shanks
    present 1, 2, ... in shank order (1 for single-shank probes).

    A meta file needs at least: imroTbl, nSavedChans, snsSaveChanSubset, and imDatPrb_pn (when absent,
    it is inferred from imDatPrb_type or the imroTbl header: 0 -> NP1000, 21 -> NP2000, 24 -> NP2010).
    """
    path = Path(path)
    where = f"SpikeGLX file {str(path)!r}"
    meta = _parse_meta(path)
    missing = [k for k in ("imroTbl", "nSavedChans", "snsSaveChanSubset") if k not in meta]
    if missing:
        raise ProbeError(f"{where} lacks {', '.join(missing)}; is it the .meta of an imec (Neuropixels) "
                         "stream? (.nidq.meta files have no probe.)")
    nchantot = _agree_nchantot(_meta_int(meta, "nSavedChans", where), n_channels, where)
    extra = {}
    if not meta.get("imDatPrb_pn") and "imProbeOpt" not in meta:  # imProbeOpt: 3A, probeinterface knows
        extra["imDatPrb_pn"] = _infer_part_number(meta, where)
    probe = _read_spikeglx(path, extra, where)
    result = from_probeinterface(probe, n_channels=nchantot, name=path.name.split(".")[0])
    logger.debug("%s: %s, %d mapped of %d saved channels", where, probe.model_name, result.Nchan,
                 nchantot)
    return result


def _parse_meta(path: Path) -> dict:
    """key=value lines of a .meta file (a leading '~' on a key is dropped, as SpikeGLX intends)."""
    meta = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            meta[key.strip().lstrip("~")] = value.strip()
    return meta


def _meta_int(meta: dict, key: str, where: str) -> int:
    try:
        return int(meta[key])
    except ValueError as exc:
        raise ProbeError(f"{where}: {key}={meta[key]!r} is not an integer.") from exc


def _infer_part_number(meta: dict, where: str) -> str:
    probe_type = meta.get("imDatPrb_type") or meta["imroTbl"].lstrip("(").split(",")[0].split(")")[0]
    probe_type = probe_type.strip()
    if probe_type not in _PART_NUMBER_BY_TYPE:
        raise ProbeError(f"{where} has no imDatPrb_pn and probe type {probe_type!r} is not one this "
                         f"loader can infer ({', '.join(sorted(_PART_NUMBER_BY_TYPE))}); add the line "
                         "imDatPrb_pn=<part number> to the meta file.")
    return _PART_NUMBER_BY_TYPE[probe_type]


def _read_spikeglx(path: Path, extra: dict, where: str):
    """probeinterface.read_spikeglx(path), with ``extra`` key=value lines appended when needed."""
    pi = _import_probeinterface("a SpikeGLX .meta file")
    try:
        if not extra:
            return pi.read_spikeglx(path)
        # read_spikeglx only takes a path, so hand it a completed copy of the meta file.
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            lines = path.read_text(errors="replace").rstrip("\n").split("\n")
            lines += [f"{k}={v}" for k, v in extra.items()]
            copy.write_text("\n".join(lines) + "\n")
            return pi.read_spikeglx(copy)
    except ProbeError:
        raise
    except Exception as exc:  # probeinterface signals bad metas with KeyError/AssertionError/ValueError
        raise ProbeError(f"probeinterface could not read the probe from {where} "
                         f"({type(exc).__name__}: {exc}). Check imroTbl, imDatPrb_pn and "
                         "snsSaveChanSubset, or give a channel-map file instead.") from exc
