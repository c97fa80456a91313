"""The parameter table: defaults, validation, aliases, SpikeInterface keys, derived values."""
import math
import re
from pathlib import Path

import pytest

from pykilosort.errors import ParameterError
from pykilosort.params import (PARAMS, default_params, derive, params_from_json,
                               params_markdown_table, params_reading, resolve_params)

# SpikeInterface's pykilosort wrapper: its default params plus what it adds, exactly as it calls run().
SPIKEINTERFACE_KWARGS = {
    "low_memory": False, "seed": 42, "preprocessing_function": "kilosort2",
    "save_drift_spike_detections": False, "perform_drift_registration": False,
    "do_whitening": True, "save_temp_files": True, "fshigh": 300.0, "fslow": None,
    "minfr_goodchannels": 0.1, "genericSpkTh": 8.0, "nblocks": 5, "sig_datashift": 20.0,
    "stable_mode": True, "deterministic_mode": True, "datashift": None, "Th": [10, 4], "ThPre": 8,
    "lam": 10, "minFR": 1.0 / 50, "momentum": [20, 400], "sigmaMask": 30, "spkTh": -6, "reorder": 1,
    "nSkipCov": 25, "ntbuff": 64, "whiteningRange": 32, "scaleproc": 200, "nPCs": 3, "nt0": 61,
    "nup": 10, "sig": 1, "gain": 1, "templateScaling": 20.0, "loc_range": [5, 4],
    "long_range": [30, 6], "keep_good_only": False, "n_channels": 64, "data_dtype": "int16",
    "fs": 30000.0,
}


def test_defaults_are_kilosort2_configfile384():
    p = default_params()
    expected = dict(fs=30000.0, fshigh=150.0, minfr_goodchannels=0.1, Th=(10.0, 4.0), lam=10.0,
                    AUCsplit=0.9, minFR=0.02, momentum=(20.0, 400.0), sigmaMask=30.0, ThPre=8.0,
                    spkTh=-6.0, reorder=True, nskip=25, nfilt_factor=4, ntbuff=64, NT=64 * 1024 + 64,
                    whiteningRange=32, nSkipCov=25, scaleproc=200.0, nPCs=3, nt0=61, CAR=True,
                    loc_range=(5.0, 4.0), long_range=(30.0, 6.0), useStableMode=True, seed=1,
                    sig=20.0, nblocks=5)
    for name, value in expected.items():
        assert p[name] == value, name


def test_every_param_documented_with_steps():
    for p in PARAMS.values():
        assert p.doc and p.steps, p.name
        assert p.kind in {"float", "int", "bool", "str", "pair", "optfloat"}


def test_unknown_key_suggests():
    with pytest.raises(ParameterError, match=r"unknown parameter 'fshihg'.*Did you mean 'fshigh'"):
        resolve_params(fshihg=300)
    with pytest.raises(ParameterError, match=r"Did you mean 'NT'"):
        resolve_params(nt=1000)


@pytest.mark.parametrize("key, value, pattern", [
    ("fshigh", -5, r"'fshigh'=-5.0 is out of range \[1, inf\]"),
    ("nSkipCov", 0, r"'nSkipCov'=0 is out of range"),
    ("AUCsplit", 1.5, r"'AUCsplit'=1.5 is out of range \[0, 1\]"),
    ("spkTh", 6, r"'spkTh'=6.0 is out of range"),
    ("nt0", 61.5, r"'nt0' must be an integer"),
    ("NT", "big", r"'NT' must be an integer"),
    ("fshigh", float("nan"), r"'fshigh' must be a number, not NaN"),
    ("CAR", "yes", r"'CAR' must be True or False"),
    ("Th", 10, r"'Th' must be a pair of numbers"),
    ("dtype", "int8", r"'dtype'='int8' must be one of"),
    ("fshigh", True, r"'fshigh' must be a number"),
])
def test_bad_values_name_parameter_and_range(key, value, pattern):
    with pytest.raises(ParameterError, match=pattern):
        resolve_params({key: value})


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(fshigh=20000), r"below the Nyquist"),
    (dict(fslow=100), r"fslow=100 Hz must lie between"),
    (dict(ntbuff=48), r"multiple of 32"),
    (dict(NT=2048, ntbuff=512), r"NT=2048 is too short"),
    (dict(trange=(5, 2)), r"start < end"),
    (dict(useStableMode=False), r"deterministic_mode=True needs useStableMode"),
    (dict(nt0=31, nt0min=40), r"nt0min=40 must be smaller than nt0=31"),
])
def test_relations_between_params(kwargs, pattern):
    with pytest.raises(ParameterError, match=pattern):
        resolve_params(kwargs)


def test_aliases_and_conflicts():
    p = resolve_params(n_channels=385, data_dtype="int16", stable_mode=False,
                       deterministic_mode=False, perform_drift_registration=True)
    assert (p.NchanTOT, p.dtype, p.useStableMode, p.drift_correction) == (385, "int16", False, True)
    with pytest.raises(ParameterError, match=r"'NchanTOT' and 'n_channels' name the same"):
        resolve_params(NchanTOT=384, n_channels=385)


def test_spikeinterface_wrapper_call_is_honoured():
    p = resolve_params(SPIKEINTERFACE_KWARGS)
    assert p.NchanTOT == 64 and p.seed == 42 and p.fshigh == 300.0 and p.sig == 20.0
    assert p.Th == (10.0, 4.0) and p.useStableMode and not p.drift_correction


@pytest.mark.parametrize("key, value, pattern", [
    ("preprocessing_function", "destriping", r"'destriping' is not supported.*only Kilosort2"),
    ("nup", 4, r"nup=4 is not supported"),
    ("save_drift_spike_detections", True, r"not implemented"),
    ("datashift", {"a": 1}, r"datashift=.* is not supported"),
])
def test_spikeinterface_keys_we_cannot_honour_are_rejected(key, value, pattern):
    with pytest.raises(ParameterError, match=pattern):
        resolve_params({**SPIKEINTERFACE_KWARGS, key: value})


def test_sig_conflict_with_sig_datashift():
    with pytest.raises(ParameterError, match=r"both sig=5 and sig_datashift=20"):
        resolve_params(sig=5, sig_datashift=20)
    assert resolve_params(sig=7).sig == 7.0


def test_params_frozen_and_replace_validates():
    p = default_params()
    with pytest.raises(AttributeError, match="frozen"):
        p.NT = 5
    q = p.replace(fshigh=300)
    assert q.fshigh == 300 and p.fshigh == 150
    with pytest.raises(ParameterError):
        p.replace(fshigh=-1)


def test_json_round_trip_keeps_inf_and_tuples():
    p = resolve_params(whiteningRange=math.inf, trange=(1, math.inf), Th=[9, 3])
    q = params_from_json(p.to_json())
    assert dict(q) == dict(p)


def test_derived_values_not_written_back():
    p = resolve_params(NT=65472, trange=(1.0, 11.0))
    d = derive(p, n_samples=30000 * 20)
    assert (d.tstart, d.tend, d.NTbuff, d.nt0min) == (30000, 330000, 65472 + 256, 20)
    assert d.Nbatch == math.ceil(300000 / (65472 - 64))
    assert "Nbatch" not in p and "NTbuff" not in p and p.nt0min is None
    # trange beyond the data is clipped; a range past the end is an error
    assert derive(p.replace(trange=(0, 1e9)), n_samples=1000).tend == 1000
    with pytest.raises(ParameterError, match=r"selects no data"):
        derive(p.replace(trange=(100, 200)), n_samples=1000)


def test_params_reading_lists_steps():
    assert "nSkipCov" in params_reading("whitening") and "nSkipCov" not in params_reading("good_channels")
    assert "minfr_goodchannels" in params_reading("good_channels")
    assert "Th" not in params_reading("preprocess")


def test_readme_parameter_table_in_sync():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    m = re.search(r"<!-- params-table-start -->\n(.*?)\n<!-- params-table-end -->", readme, re.S)
    assert m, "README.md lacks the generated parameter table markers"
    assert m.group(1).strip() == params_markdown_table().strip(), (
        "README parameter table is stale: regenerate it with "
        "`python -c 'from pykilosort.params import params_markdown_table as t; print(t())'`")
