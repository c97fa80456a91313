"""The declarative table of every Kilosort2/2.5 parameter, and their resolution.

Each :class:`Param` carries the MATLAB ``ops`` name, its default (configFile384.m and the ``getOr``
defaults inside the original code), the allowed range, the pipeline steps that read it and a
description. :func:`resolve_params` turns user keyword arguments into a frozen :class:`Params`:
unknown keys are an error with a did-you-mean, wrong types and out-of-range values are errors that
name the parameter and its range, and the keys that SpikeInterface's ``pykilosort`` wrapper passes are
either honoured or rejected with a message. Values derived from the data (NTbuff, Nbatch, Nfilt, ...)
are computed by :func:`derive` and never written back into the user's parameters.
"""
from __future__ import annotations

import difflib
import json
import logging
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from .errors import ParameterError

logger = logging.getLogger(__name__)

__all__ = ["Param", "PARAMS", "Params", "Derived", "resolve_params", "default_params", "derive",
           "params_reading", "params_markdown_table"]

INF = math.inf


@dataclass(frozen=True)
class Param:
    """One parameter: MATLAB name, kind, default, bounds (inclusive), steps reading it, description.

    ``kind`` is one of: 'float', 'int', 'bool', 'str', 'pair' (two floats), 'optfloat' (float or None).
    """

    name: str
    kind: str
    default: Any
    steps: tuple
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    aliases: tuple = ()
    unit: str = ""

    def range_text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "True or False"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"[{lo}, {hi}]"


_P = Param
# Steps: 'io' (raw data, probe), 'good_channels', 'whitening', 'preprocess', 'datashift',
# 'reorder' (clusterSingleBatches), 'learn', 'duplicates', 'merges', 'split_svd',
# 'split_amplitude', 'cutoff', 'good_units', 'run' (run-level behaviour).
_TABLE = [
    # --- recording ------------------------------------------------------------------------------
    _P("NchanTOT", "int", None, ("io",), "channels saved in the binary file (None: from the probe "
       "or the SpikeGLX .meta)", low=1, high=100000, aliases=("n_channels",)),
    _P("fs", "float", 30000.0, ("io", "good_channels", "whitening", "preprocess"),
       "sampling rate", low=1000.0, high=1e6, unit="Hz", aliases=("sample_rate",)),
    _P("dtype", "str", "int16", ("io",), "sample type of the raw binary file",
       choices=("int16", "uint16", "int32", "float32", "float64"), aliases=("data_dtype",)),
    _P("trange", "pair", (0.0, INF), ("io",), "time range to sort [start, end] (MATLAB ops.trange)",
       low=0.0, unit="s"),
    _P("drop_partial_sample", "bool", False, ("io",), "sort a truncated file (size not a whole "
       "number of samples) without its partial last sample, instead of refusing it"),
    _P("seed", "int", 1, ("reorder", "learn"),
       "seed of the random streams (MATLAB rng); CSBseed and LTseed default to it",
       low=0, high=2**32 - 1),
    _P("CSBseed", "int", None, ("reorder",), "seed of batch reordering (clusterSingleBatches; "
       "None: seed)", low=0, high=2**32 - 1),
    _P("LTseed", "int", None, ("learn",), "seed of template learning (learnTemplates; None: seed)",
       low=0, high=2**32 - 1),
    _P("random_stream", "str", "octave", ("reorder", "learn"),
       "random numbers: 'octave' reproduces MATLAB/Octave's rng(seed) stream exactly, 'numpy' "
       "uses PCG64", choices=("octave", "numpy")),
    # --- preprocessing --------------------------------------------------------------------------
    _P("fshigh", "float", 150.0, ("good_channels", "whitening", "preprocess"),
       "high-pass corner of the 3rd-order Butterworth filter (KS2.5 config: 300)", low=1.0, unit="Hz"),
    _P("fslow", "optfloat", None, ("good_channels", "whitening", "preprocess"),
       "low-pass corner; None (default) for high-pass only (the original discourages it)", low=1.0,
       unit="Hz"),
    _P("CAR", "bool", True, ("good_channels", "whitening", "preprocess"),
       "subtract the median across channels (common median reference) before filtering"),
    _P("minfr_goodchannels", "float", 0.1, ("good_channels",),
       "minimum threshold-crossing rate of a good channel; 0 keeps all channels", low=0.0, unit="Hz"),
    _P("spkTh", "float", -6.0, ("good_channels", "reorder", "datashift"),
       "spike threshold in standard deviations (negative)", low=-1000.0, high=-0.1),
    _P("nt0", "int", 61, ("good_channels", "reorder", "datashift", "learn"),
       "template length in samples (the original's kernels need <= 81)", low=3, high=201),
    _P("nt0min", "int", None, ("reorder", "datashift", "learn"),
       "sample of the template trough (None: ceil(20*nt0/61))", low=1, high=200),
    _P("NT", "int", 64 * 1024 + 64, ("good_channels", "whitening", "preprocess", "reorder", "learn"),
       "batch length in samples (v2.0: 64*1024+64; v2.0.2 and 2.5: 64*1024-64)", low=1024,
       high=2**24),
    _P("ntbuff", "int", 64, ("whitening", "preprocess", "learn"),
       "samples of overlap between batches (a multiple of 32)", low=32, high=4096),
    _P("whiteningRange", "float", 32, ("whitening",),
       "nearest channels used to whiten each channel (inf: whiten with all)", low=1, high=INF),
    _P("nSkipCov", "int", 25, ("whitening",), "use every nSkipCov-th batch for the covariance",
       low=1, high=100000),
    _P("scaleproc", "float", 200.0, ("whitening",), "int16 scale of the whitened data", low=1.0,
       high=10000.0),
    _P("do_whitening", "bool", True, ("whitening",),
       "whiten across channels (False: scale each channel to unit variance instead)"),
    _P("matlab_compat", "bool", False, ("good_channels", "whitening", "preprocess", "reorder",
                                        "datashift", "learn", "split_svd", "split_amplitude", "cutoff"),
       "reproduce the original's known bugs exactly (README: 'Legacy quirks')"),
    # --- KS2.5 drift correction ---------------------------------------------------------------
    _P("drift_correction", "bool", False, ("good_channels", "whitening", "preprocess", "datashift",
                                           "reorder", "split_svd"),
       "Kilosort 2.5: its preprocessing (all channels kept, cross-faded batches) and datashift drift "
       "correction instead of KS2 batch reordering",
       aliases=("perform_drift_registration",)),
    _P("nblocks", "int", 5, ("datashift",), "KS2.5: 0 none, 1 rigid, >1 non-rigid blocks", low=0,
       high=64),
    _P("sig", "float", 20.0, ("datashift",), "KS2.5: spatial scale of the datashift kernel",
       low=0.1, high=1000.0, unit="um", aliases=("sig_datashift",)),
    _P("genericSpkTh", "float", 8.0, ("datashift",),
       "KS2.5: threshold of the generic-template detector", low=0.1, high=1000.0),
    _P("datashift_max_spikes", "int", None, ("datashift",),
       "KS2.5: most generic-template detections kept per batch (None: all; the original keeps "
       "an arbitrary 10000 without saying so)", low=1, high=10**9),
    # --- batch reordering and template learning ---------------------------------------------
    _P("reorder", "bool", True, ("reorder",), "KS2: reorder batches by similarity"),
    _P("nskip", "int", 25, ("reorder", "datashift", "learn"), "batches skipped when extracting spike PCs", low=1,
       high=100000),
    _P("ThPre", "float", 8.0, ("reorder",), "threshold crossings for pre-clustering", low=0.0),
    _P("loc_range", "pair", (5, 4), ("reorder", "datashift"), "isolated_peaks_new local window [time, chan]",
       low=1),
    _P("long_range", "pair", (30, 6), ("reorder", "datashift"), "isolated_peaks_new long window [time, chan]",
       low=1),
    _P("nPCs", "int", 3, ("reorder", "learn"), "PCs per channel for spike features", low=1, high=12),
    _P("nfilt_factor", "int", 4, ("learn",), "max templates per good channel", low=1, high=64),
    _P("Th", "pair", (10.0, 4.0), ("learn", "cutoff"),
       "template-matching thresholds [learning, final]; set_cutoff tries thresholds between them",
       low=0.0),
    _P("lam", "float", 10.0, ("learn",), "amplitude penalty (0 none, 10 average, 50 a lot)", low=0.0),
    _P("momentum", "pair", (20.0, 400.0), ("learn",),
       "template running-average samples, annealed from first to second", low=1.0),
    _P("sigmaMask", "float", 30.0, ("learn", "split_svd", "split_amplitude"), "spatial constant of the residual variance mask",
       low=0.0, unit="um"),
    _P("minFR", "float", 1 / 50, ("learn",), "templates firing below this are dropped", low=0.0,
       unit="Hz"),
    _P("useStableMode", "bool", True, ("learn",),
       "deterministic subtraction order and double accumulation in template matching",
       aliases=("stable_mode",)),
    _P("deterministic_mode", "bool", True, ("learn",),
       "sort spikes before applying kernels (needs useStableMode)"),
    # --- post-processing ------------------------------------------------------------------------
    _P("AUCsplit", "float", 0.9, ("split_svd", "split_amplitude"),
       "mean assignment confidence both pieces need for a cluster to be split", low=0.0, high=1.0),
    _P("remove_duplicate_spikes", "bool", False, ("duplicates",),
       "remove double-counted spikes before merging (remove_ks2_duplicate_spikes; off in the "
       "original's master script)"),
    _P("duplicate_overlap_s", "float", 5e-4, ("duplicates",),
       "spikes closer than this in time are duplicate candidates", low=0.0, high=0.01, unit="s"),
    _P("duplicate_separation_um", "float", 100.0, ("duplicates",),
       "... if their templates' primary channels are closer than this", low=0.0, unit="um"),
    # --- run-level ------------------------------------------------------------------------------
    _P("save_temp_files", "bool", True, ("run",),
       "keep the intermediates under <dir_path>/.kilosort after a run (needed to resume)"),
]

PARAMS: Mapping[str, Param] = MappingProxyType({p.name: p for p in _TABLE})
_ALIASES = {a: p.name for p in _TABLE for a in p.aliases}

# Keys SpikeInterface's pykilosort wrapper (IBL-style) passes that are not Kilosort2 ops fields.
# Each maps to the single value we can honour (Kilosort2's built-in behaviour) and why.
_FIXED_KEYS = {
    "low_memory": ((True, False), "pykilosort always streams batches from disk; memory is bounded "
                                  "either way"),
    "preprocessing_function": (("kilosort2",), "only Kilosort2 preprocessing is implemented "
                                               "(IBL 'destriping' is not)"),
    "save_drift_spike_detections": ((False,), "saving drift spike detections is not implemented"),
    "datashift": ((None,), "pass drift-correction settings as nblocks / sig / genericSpkTh"),
    "nup": ((10,), "Kilosort2 upsamples 10x in mexSVDsmall2; it is not adjustable"),
    "gain": ((1, 1.0), "raw data are used in their own units; gain is not adjustable"),
    "templateScaling": ((20, 20.0), "Kilosort2's template scaling (20) is not adjustable"),
    "keep_good_only": ((True, False), "used by SpikeInterface when it reads the output"),
}
_IBL_SIG_DEFAULT = 1  # IBL's unrelated `sig`, passed by the wrapper next to `sig_datashift`


class Params(Mapping):
    """Frozen, resolved parameters with attribute access (``params.NT``, ``params['NT']``)."""

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key):
        return self._values[key]

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        raise AttributeError("Params are frozen; use params.replace(name=value) for a new set.")

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        changed = {k: v for k, v in self._values.items() if v != PARAMS[k].default}
        return f"Params({changed})"

    def replace(self, **changes) -> "Params":
        """A new resolved set with ``changes`` applied (validated like user input)."""
        return resolve_params({**self._values, **changes})

    def to_json(self) -> str:
        return json.dumps({k: _jsonable(v) for k, v in self._values.items()}, indent=1)


def _jsonable(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def _from_jsonable(v):
    if v in ("inf", "-inf"):
        return float(v)
    if isinstance(v, list):
        return tuple(_from_jsonable(x) for x in v)
    return v


def default_params() -> Params:
    """All parameters at their Kilosort2 (v2.0, configFile384.m) defaults."""
    return Params({p.name: p.default for p in _TABLE})


def params_from_json(text: str) -> Params:
    """Inverse of :meth:`Params.to_json`."""
    return resolve_params({k: _from_jsonable(v) for k, v in json.loads(text).items()})


def _type_error(p: Param, value, expected: str) -> ParameterError:
    return ParameterError(f"parameter {p.name!r} must be {expected}, got {value!r} "
                          f"({type(value).__name__}). Allowed: {p.range_text()}. {p.doc}.")


_INF_WORDS = {"inf": INF, "+inf": INF, "infinity": INF, "-inf": -INF, "-infinity": -INF}


def _check_number(p: Param, value, *, integer: bool):
    import numbers

    import numpy as np

    if not integer and isinstance(value, str) and value.strip().lower() in _INF_WORDS:
        value = _INF_WORDS[value.strip().lower()]  # "inf" as the README table and JSON write it
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _type_error(p, value, "an integer" if integer else "a number")
    if isinstance(value, float) and math.isnan(value):
        raise _type_error(p, value, "a number, not NaN")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise _type_error(p, value, "an integer")
        value = int(value)
    else:
        value = float(value)
    if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
        raise ParameterError(f"parameter {p.name!r}={value!r} is out of range {p.range_text()}"
                             f"{' ' + p.unit if p.unit else ''}. {p.doc}.")
    return value


def _coerce(p: Param, value):
    """Validate ``value`` for ``p`` and return it in canonical form (float, int, bool, tuple)."""
    if p.kind == "optfloat" and value is None:
        return None
    if p.kind in ("int", "float", "optfloat"):
        if value is None and p.default is None:
            return None
        return _check_number(p, value, integer=p.kind == "int")
    if p.kind == "bool":
        import numpy as np

        if isinstance(value, (bool, np.bool_)) or value in (0, 1):
            return bool(value)
        raise _type_error(p, value, "True or False")
    if p.kind == "str":
        value = getattr(value, "name", value)  # accept numpy dtypes for `dtype`
        if not isinstance(value, str) or (p.choices and value not in p.choices):
            raise ParameterError(f"parameter {p.name!r}={value!r} must be {p.range_text()}.")
        return value
    if p.kind == "pair":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
            raise _type_error(p, value, "a pair of numbers [a, b]")
        return tuple(_check_number(p, v, integer=False) for v in value)
    raise AssertionError(f"unknown kind {p.kind}")


def _suggest(key: str) -> str:
    names = list(PARAMS) + list(_ALIASES)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    lower = [n for n in names if n.lower() == key.lower()]
    close = lower + [c for c in close if c not in lower]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _handle_compat_keys(user: dict) -> dict:
    """Check and remove the SpikeInterface-wrapper keys that are not Kilosort2 parameters."""
    user = dict(user)
    if "sig" in user and "sig_datashift" in user:
        # The wrapper passes IBL's unrelated `sig` (default 1) next to `sig_datashift` (KS2.5 ops.sig).
        if user["sig"] != _IBL_SIG_DEFAULT and user["sig"] != user["sig_datashift"]:
            raise ParameterError(
                f"both sig={user['sig']!r} and sig_datashift={user['sig_datashift']!r} were given; "
                "they name the same Kilosort2.5 parameter (ops.sig). Pass only one.")
        logger.info("ignoring sig=%r next to sig_datashift (IBL's `sig`, not Kilosort2.5's ops.sig)",
                    user["sig"])
        del user["sig"]
    for key, (accepted, why) in _FIXED_KEYS.items():
        if key in user:
            value = user.pop(key)
            if value not in accepted:
                raise ParameterError(f"{key}={value!r} is not supported: {why}. "
                                     f"Accepted: {', '.join(repr(a) for a in accepted)}.")
            logger.debug("%s=%r accepted: %s", key, value, why)
    return user


def resolve_params(user: Mapping[str, Any] | None = None, **kwargs) -> Params:
    """Validate user parameters (dict and/or keywords) over the defaults; return frozen Params.

    Raises:
        ParameterError: unknown key (with did-you-mean), wrong type, out-of-range value, a key given
        twice under two names, or a SpikeInterface-wrapper key with a value we cannot honour.
    """
    merged = {**dict(user or {}), **kwargs}
    merged = _handle_compat_keys(merged)
    values = {p.name: p.default for p in _TABLE}
    given_as: dict[str, str] = {}
    for key, value in merged.items():
        name = _ALIASES.get(key, key)
        if name not in PARAMS:
            raise ParameterError(f"unknown parameter {key!r}.{_suggest(key)} "
                                 "See pykilosort.params.PARAMS (or the README) for the full table.")
        if name in given_as and merged[given_as[name]] != value:
            raise ParameterError(f"{given_as[name]!r} and {key!r} name the same parameter {name!r} "
                                 "but were given different values; pass only one.")
        given_as[name] = key
        values[name] = _coerce(PARAMS[name], value)
    _check_relations(values)
    return Params(values)


def _check_relations(v: dict) -> None:
    """Constraints that involve several parameters."""
    nyquist = v["fs"] / 2
    if v["fshigh"] >= nyquist:
        raise ParameterError(f"fshigh={v['fshigh']:g} Hz must be below the Nyquist frequency "
                             f"fs/2={nyquist:g} Hz.")
    if v["fslow"] is not None and not v["fshigh"] < v["fslow"] < nyquist:
        raise ParameterError(f"fslow={v['fslow']:g} Hz must lie between fshigh={v['fshigh']:g} Hz "
                             f"and fs/2={nyquist:g} Hz (or be None for high-pass only).")
    if v["ntbuff"] % 32:
        raise ParameterError(f"ntbuff={v['ntbuff']} must be a multiple of 32 (the kernels work in "
                             "32-sample tiles).")
    if v["NT"] <= 4 * v["ntbuff"] or v["NT"] <= 2 * v["nt0"]:
        raise ParameterError(f"NT={v['NT']} is too short for ntbuff={v['ntbuff']} and nt0="
                             f"{v['nt0']}: need NT > 4*ntbuff and NT > 2*nt0.")
    if v["nt0min"] is not None and v["nt0min"] >= v["nt0"]:
        raise ParameterError(f"nt0min={v['nt0min']} must be smaller than nt0={v['nt0']}.")
    t0, t1 = v["trange"]
    if not t1 > t0:
        raise ParameterError(f"trange={list(v['trange'])} must satisfy start < end (seconds).")
    if v["deterministic_mode"] and not v["useStableMode"]:
        raise ParameterError("deterministic_mode=True needs useStableMode=True; set "
                             "deterministic_mode=False to run without stable mode.")


def params_reading(step: str) -> tuple[str, ...]:
    """Names of the parameters that ``step`` reads (part of its checkpoint key)."""
    return tuple(p.name for p in _TABLE if step in p.steps)


@dataclass(frozen=True)
class Derived:
    """Values Kilosort computes from params and data (MATLAB stores them back into ops; we don't).

    Samples are counted from the start of the (concatenated) recording.
    """

    tstart: int      # first sample sorted: ceil(trange[0] * fs)
    tend: int        # one past the last: min(n_samples, ceil(trange[1] * fs))
    NTbuff: int      # batch plus filter buffers: NT + 4*ntbuff (KS2), NT + 3*ntbuff (KS2.5)
    nt0min: int      # template trough sample, ceil(20*nt0/61) by default
    Nbatch: int      # ceil((tend - tstart) / (NT - ntbuff)) in KS2, ceil(... / NT) in KS2.5
    ks25: bool       # Kilosort 2.5 batch geometry (drift_correction=True)

    @property
    def samps_to_read(self) -> int:
        return self.tend - self.tstart


def derive(params: Params, *, n_samples: int) -> Derived:
    """Compute the derived values for a recording of ``n_samples`` samples."""
    fs = params.fs
    tstart = math.ceil(params.trange[0] * fs)
    tend = n_samples if math.isinf(params.trange[1]) else min(n_samples,
                                                              math.ceil(params.trange[1] * fs))
    if tstart >= tend:
        raise ParameterError(f"trange={list(params.trange)} s selects no data: the recording has "
                             f"{n_samples} samples ({n_samples / fs:.3f} s).")
    nt0min = params.nt0min if params.nt0min is not None else math.ceil(20 * params.nt0 / 61)
    ks25 = bool(params.drift_correction)
    step = params.NT if ks25 else params.NT - params.ntbuff
    return Derived(tstart=tstart, tend=tend, nt0min=nt0min, Nbatch=math.ceil((tend - tstart) / step),
                   NTbuff=params.NT + (3 if ks25 else 4) * params.ntbuff, ks25=ks25)


def params_markdown_table() -> str:
    """The parameter table as Markdown (the README embeds it; a test keeps them in sync)."""
    rows = ["| name | default | allowed | read by | description |", "|---|---|---|---|---|"]
    for p in _TABLE:
        default = "None" if p.default is None else json.dumps(_jsonable(p.default))
        alias = f" (alias: {', '.join(p.aliases)})" if p.aliases else ""
        unit = f" [{p.unit}]" if p.unit else ""
        rows.append(f"| `{p.name}`{alias} | {default} | {p.range_text()}{unit} | "
                    f"{', '.join(p.steps)} | {p.doc} |")
    return "\n".join(rows)
