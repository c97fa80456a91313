"""Probe loaders, presets and the Probe type's own behaviour.

Every file a loader reads is written here into ``tmp_path``. The one stored fixture,
``tests/data/kilosort_chanmaps_np1_np2.npz``, holds arrays derived from Kilosort's own channel-map
files (``configFiles/neuropixPhase3B1_kilosortChanMap.mat`` at tag v2.0 and
``configFiles/NP2_kilosortChanMap.mat`` at v2.5): per probe ``chanMap0`` (= chanMap - 1), ``xc``,
``yc`` (xcoords, ycoords), ``kcoords`` (shankInd / kcoords) and ``connected``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import probeinterface as pi
import pytest
import scipy.io

from pykilosort.errors import KilosortError, ProbeError
from pykilosort.probes import (PRESETS, Probe, get_probe, linear, load_probe, neuropixels1,
                               neuropixels2)
from pykilosort.probes.loaders import ProbeFileNotFoundError, UnsupportedProbeSourceError

DATA = Path(__file__).parent / "data"


# ====================================================================== helpers
def small_probe(**overrides) -> Probe:
    """6 channels out of 8 saved, 2 columns, channel 3 unconnected."""
    kw = dict(NchanTOT=8, chanMap=[0, 1, 2, 3, 4, 6], xc=[0, 16, 0, 16, 0, 16],
              yc=[0, 0, 20, 20, 40, 40], kcoords=[1, 1, 1, 1, 2, 2],
              connected=[True, True, True, False, True, True], name="small")
    kw.update(overrides)
    return Probe(**kw)


def pairwise_distances(probe: Probe) -> np.ndarray:
    """(n, n) distances between sites, invariant to reflections and translations."""
    pos = np.stack([probe.xc, probe.yc], axis=1)
    return np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)


def write_ks_mat(path: Path, **variables) -> Path:
    """A Kilosort-style .mat: vectors saved as MATLAB columns (n, 1), as MATLAB's save() does."""
    scipy.io.savemat(str(path), variables, oned_as="column")
    return path


def np1_imro(n: int = 384, bank: int = 0) -> str:
    # NP1.0 entry: (channel bank ref_id ap_gain lf_gain ap_hipas_flt)
    return f"(0,{n})" + "".join(f"({c} {bank} 0 500 250 1)" for c in range(n))


def np2_imro() -> str:
    # NP2.0 single shank (type 21) entry: (channel bank_mask ref_id electrode); bank_mask 1 = bank 0
    return "(21,384)" + "".join(f"({c} 1 0 {c})" for c in range(384))


def np24_imro() -> str:
    # NP2.0 four shanks (type 24) entry: (channel shank bank ref_id electrode): 96 channels per shank
    return "(24,384)" + "".join(f"({c} {c // 96} 0 0 {c % 96})" for c in range(384))


def write_meta(path: Path, imro: str, *, n_saved: int = 385, subset: str = "all",
               extra: dict | None = None) -> Path:
    """A minimal SpikeGLX .ap.meta: the fields probeinterface.read_spikeglx and our loader read."""
    # SpikeGLX writes a '~' before fields the user may not edit, such as the imro table.
    fields = {"~imroTbl": imro, "nSavedChans": n_saved, "snsSaveChanSubset": subset,
              "snsApLfSy": "384,0,1", "typeThis": "imec"}
    fields.update(extra or {})
    path.write_text("".join(f"{k}={v}\n" for k, v in fields.items() if v is not None))
    return path


# ====================================================================== presets
@pytest.fixture(scope="module")
def kilosort_maps():
    with np.load(DATA / "kilosort_chanmaps_np1_np2.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("tag, factory", [("np1", neuropixels1), ("np2", neuropixels2)])
def test_neuropixels_presets_match_kilosort_channel_map_files(kilosort_maps, tag, factory):
    probe = factory()
    np.testing.assert_array_equal(probe.chanMap, kilosort_maps[f"{tag}_chanMap0"])
    np.testing.assert_array_equal(probe.xc, kilosort_maps[f"{tag}_xc"])
    np.testing.assert_array_equal(probe.yc, kilosort_maps[f"{tag}_yc"])
    np.testing.assert_array_equal(probe.kcoords, kilosort_maps[f"{tag}_kcoords"])
    np.testing.assert_array_equal(probe.connected, kilosort_maps[f"{tag}_connected"])
    assert probe.NchanTOT == 385  # 384 electrodes + SpikeGLX sync channel, which is not mapped
    assert probe.Nchan == 384


def test_neuropixels1_reference_channel_is_unconnected():
    probe = neuropixels1()
    assert np.flatnonzero(~probe.connected).tolist() == [191]
    assert probe.connected_only().Nchan == 383
    assert 191 not in probe.connected_only().chanMap


def test_neuropixels_preset_geometry():
    p1, p2 = neuropixels1(), neuropixels2()
    assert p1.xc[:4].tolist() == [43, 11, 59, 27] and p1.xc[4:8].tolist() == [43, 11, 59, 27]
    assert np.unique(np.diff(np.unique(p1.yc))).tolist() == [20]
    assert sorted(set(p2.xc)) == [0, 32] and np.unique(np.diff(np.unique(p2.yc))).tolist() == [15]
    assert p2.yc.max() == 15 * 191


def test_presets_accept_nchantot_for_files_without_sync():
    assert neuropixels1(NchanTOT=384).NchanTOT == 384
    with pytest.raises(ProbeError, match="NchanTOT=383"):
        neuropixels2(NchanTOT=383)  # too few rows for chanMap 0..383


def test_linear_probe():
    probe = linear(5, pitch=25.0)
    assert probe.chanMap.tolist() == [0, 1, 2, 3, 4]
    assert probe.xc.tolist() == [0] * 5 and probe.yc.tolist() == [0, 25, 50, 75, 100]
    assert probe.NchanTOT == 5 and probe.connected.all()
    assert linear(4, NchanTOT=6).NchanTOT == 6
    assert linear(3).yc.tolist() == [0, 20, 40]  # default pitch 20 um


@pytest.mark.parametrize("args", [(0,), (2.5,), (-3,), (True,), (4, 0.0), (4, -1.0), (4, np.nan)])
def test_linear_rejects_bad_arguments(args):
    with pytest.raises(ProbeError, match="linear"):
        linear(*args)


def test_presets_dict_and_get_probe_aliases():
    assert set(PRESETS) >= {"neuropixels1", "neuropixels2", "np1", "np2"}
    assert get_probe("np1") == neuropixels1() == get_probe("Neuropixels-1") == get_probe("NP_1")
    assert get_probe("neuropixels2") == neuropixels2() == get_probe("np2")
    assert get_probe("np1") != get_probe("np2")


def test_get_probe_unknown_name_suggests_close_match():
    with pytest.raises(ProbeError, match=r"unknown probe preset 'neuropixel1'.*Did you mean 'neuropixels1'"):
        get_probe("neuropixel1")
    with pytest.raises(ProbeError, match="Known presets: neuropixels1, neuropixels2"):
        get_probe("tetrode")


def test_load_probe_by_preset_name_and_n_channels():
    assert load_probe("neuropixels1") == neuropixels1()
    assert load_probe("NP2") == neuropixels2()
    probe = load_probe("np1", n_channels=384)  # a file saved without the sync channel
    assert probe.NchanTOT == 384 and probe.Nchan == 384


# ====================================================================== the Probe type
def test_probe_returned_as_is_and_n_channels_checked():
    probe = small_probe()
    assert load_probe(probe) is probe
    assert load_probe(probe, n_channels=8) is probe
    with pytest.raises(ProbeError, match="NchanTOT=8 but n_channels=9"):
        load_probe(probe, n_channels=9)


def test_384_vs_385_mismatch_mentions_sync_channel():
    with pytest.raises(ProbeError, match="sync channel"):
        load_probe(neuropixels1(), n_channels=384)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "385"])
def test_bad_n_channels_argument(bad):
    with pytest.raises(ProbeError, match="n_channels must be a positive integer"):
        load_probe("np1", n_channels=bad)


def test_subset_keeps_arrays_aligned():
    probe = small_probe()
    sub = probe.subset([True, False, True, False, False, True])
    assert sub.chanMap.tolist() == [0, 2, 6]
    assert sub.xc.tolist() == [0, 0, 16] and sub.yc.tolist() == [0, 20, 40]
    assert sub.kcoords.tolist() == [1, 1, 2] and sub.connected.all()
    assert sub.NchanTOT == probe.NchanTOT and sub.name == probe.name
    with pytest.raises(ProbeError, match="subset mask has shape"):
        probe.subset([True, False])


def test_connected_only_drops_unconnected_channels():
    probe = small_probe()
    kept = probe.connected_only()
    assert kept.chanMap.tolist() == [0, 1, 2, 4, 6]
    assert kept.yc.tolist() == [0, 0, 20, 40, 40]
    with pytest.raises(ProbeError, match="no channel as connected"):
        small_probe(connected=[False] * 6).connected_only()


def test_to_dict_from_dict_round_trip_is_json_serialisable():
    probe = small_probe()
    d = json.loads(json.dumps(probe.to_dict()))
    back = Probe.from_dict(d)
    assert back == probe and back.key() == probe.key() and back.name == "small"
    for name in ("chanMap", "xc", "yc", "kcoords", "connected"):
        np.testing.assert_array_equal(getattr(back, name), getattr(probe, name))


def test_key_is_stable_and_content_sensitive():
    probe = small_probe()
    # A fixed value: checkpoint keys must not change between runs, processes or releases.
    assert small_probe().key() == probe.key() == "8e6b497d1ffa74de"
    # input dtypes (MATLAB files give uint16 / uint8 / float) must not change the key
    same = small_probe(chanMap=np.array([0, 1, 2, 3, 4, 6], np.uint16),
                       xc=np.array([0, 16, 0, 16, 0, 16], np.uint8), kcoords=[1.0, 1, 1, 1, 2, 2])
    assert same.key() == probe.key() and same == probe
    assert small_probe(name="other").key() == probe.key()  # the label is not content
    changed = [small_probe(NchanTOT=9), small_probe(chanMap=[0, 1, 2, 3, 4, 7]),
               small_probe(xc=[0, 16, 0, 16, 0, 17]), small_probe(yc=[0, 0, 20, 20, 40, 41]),
               small_probe(kcoords=[1] * 6), small_probe(connected=[True] * 6)]
    keys = {p.key() for p in changed} | {probe.key()}
    assert len(keys) == len(changed) + 1


@pytest.mark.parametrize("nchantot", [384.7, True, "3x", [385, 386], np.nan])
def test_non_integer_nchantot_rejected(nchantot):
    with pytest.raises(ProbeError, match="NchanTOT must be an integer"):
        small_probe(NchanTOT=nchantot)


def test_matlab_shaped_nchantot_accepted():
    assert small_probe(NchanTOT=np.array([[8]], np.uint16)).NchanTOT == 8
    assert small_probe(NchanTOT=8.0).NchanTOT == 8


def test_boolean_or_string_chanmap_rejected():
    with pytest.raises(ProbeError, match="flatnonzero"):
        small_probe(chanMap=[True, False, True, True, True, True])
    with pytest.raises(ProbeError, match="integer channel rows"):
        small_probe(chanMap=list("abcdef"))


# ====================================================================== dicts and Bunch-like objects
def spikeinterface_fields(n=4, positions=None):
    """The fields SpikeInterface's Kilosort wrapper sets (both naming families)."""
    pos = np.c_[np.zeros(n), 20.0 * np.arange(n)] if positions is None else positions
    return dict(
        # MouseLand develop
        n_channels=n, n_channels_tot=n, channel_map=np.arange(n), channel_groups=np.ones(n),
        xcoords=pos[:, 0], ycoords=pos[:, 1],
        # IBL
        Nchans=n, NchanTOT=n, chanMap=np.arange(n), kcoords=np.ones(n), xc=pos[:, 0], yc=pos[:, 1],
        shank=None, channel_labels=np.zeros(n, int), sample2volt=2.34e-6)


class AttrBunch:
    """An attribute-only object, like a Bunch that is not a dict."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class DictBunch(dict):
    """A dict with attribute access, like pykilosort's / SpikeInterface's Bunch."""

    __getattr__ = dict.__getitem__


@pytest.mark.parametrize("wrap", [dict, AttrBunch, DictBunch], ids=["dict", "attrs", "bunch"])
def test_spikeinterface_style_bunch(wrap):
    probe = load_probe(wrap(**spikeinterface_fields(4)))
    assert probe.NchanTOT == 4 and probe.chanMap.tolist() == [0, 1, 2, 3]
    assert probe.yc.tolist() == [0, 20, 40, 60] and probe.xc.tolist() == [0] * 4
    assert probe.kcoords.tolist() == [1] * 4 and probe.connected.all()


def test_mapping_with_only_mouseland_develop_names():
    probe = load_probe(dict(n_channels_tot=6, channel_map=[0, 2, 4], xcoords=[0, 1, 2],
                            ycoords=[5, 6, 7], channel_groups=[1, 1, 2]))
    assert probe.NchanTOT == 6 and probe.chanMap.tolist() == [0, 2, 4]
    assert probe.xc.tolist() == [0, 1, 2] and probe.yc.tolist() == [5, 6, 7]
    assert probe.kcoords.tolist() == [1, 1, 2]


def test_mapping_prefers_kilosort_names_and_warns_when_they_disagree(caplog):
    fields = spikeinterface_fields(3)
    fields["yc"] = np.array([100.0, 200.0, 300.0])
    with caplog.at_level(logging.WARNING, logger="pykilosort.probes.loaders"):
        probe = load_probe(fields)
    assert probe.yc.tolist() == [100, 200, 300]
    assert "'yc' and 'ycoords' differ" in caplog.text


def test_mapping_connected_honoured_and_extra_keys_ignored():
    probe = load_probe(dict(NchanTOT=3, chanMap=[0, 1, 2], xc=[0, 0, 0], yc=[0, 1, 2],
                            connected=[1, 0, 1], sample2volt=1e-6, channel_labels=[0, 1, 0],
                            shank=None, name="mine"))
    assert probe.connected.tolist() == [True, False, True] and probe.name == "mine"
    assert probe.connected_only().chanMap.tolist() == [0, 2]


def test_mapping_missing_keys_named():
    with pytest.raises(ProbeError, match=r"missing required key\(s\): 'xc' or 'xcoords'; "
                                         r"'yc' or 'ycoords'"):
        load_probe(dict(NchanTOT=3, chanMap=[0, 1, 2]))
    with pytest.raises(ProbeError, match=r"'NchanTOT' or 'n_channels_tot' \(or pass n_channels=\)"):
        load_probe(dict(chanMap=[0, 1, 2], xc=[0, 0, 0], yc=[0, 1, 2]))
    with pytest.raises(ProbeError, match="'chanMap' or 'channel_map'"):
        load_probe({})


def test_mapping_nchantot_from_n_channels_argument():
    probe = load_probe(dict(chanMap=[0, 1, 2], xc=[0, 0, 0], yc=[0, 1, 2]), n_channels=4)
    assert probe.NchanTOT == 4
    with pytest.raises(ProbeError, match="NchanTOT=3 but n_channels=4"):
        load_probe(dict(NchanTOT=3, chanMap=[0, 1, 2], xc=[0, 0, 0], yc=[0, 1, 2]), n_channels=4)


def test_mapping_one_based_chanmap_is_not_reinterpreted():
    with pytest.raises(ProbeError, match="looks 1-based"):
        load_probe(dict(NchanTOT=4, chanMap=[1, 2, 3, 4], xc=[0] * 4, yc=[0, 1, 2, 3]))


@pytest.mark.parametrize("fields, message", [
    (dict(xc=[0, 0]), r"xc has 2 entries but chanMap has 3"),
    (dict(kcoords=[1, 1, 1, 1]), r"kcoords has 4 entries but chanMap has 3"),
    (dict(chanMap=[0, 1, 5]), r"chanMap has entry 5 but the file holds only NchanTOT=4"),
    (dict(chanMap=[0, -1, 2]), r"negative entries"),
    (dict(chanMap=[0, 2, 2]), r"lists channel\(s\) \[2\] more than once"),
    (dict(yc=[0, np.nan, 2]), r"yc is not finite for channel\(s\) \[1\]"),
    (dict(xc=[0, 0, np.inf]), r"xc is not finite for channel\(s\) \[2\]"),
    (dict(chanMap=[0, 1.5, 2]), r"non-integer"),
])
def test_inconsistent_probe_arrays_rejected(fields, message):
    base = dict(NchanTOT=4, chanMap=[0, 1, 2], xc=[0, 0, 0], yc=[0, 20, 40])
    base.update(fields)
    with pytest.raises(ProbeError, match=message):
        load_probe(base)


@pytest.mark.parametrize("source", [42, [0, 1, 2], np.arange(3), object()])
def test_unsupported_source_type(source):
    with pytest.raises(UnsupportedProbeSourceError, match="cannot make a probe from") as info:
        load_probe(source)
    assert isinstance(info.value, TypeError) and isinstance(info.value, KilosortError)
    assert "preset name" in str(info.value) and ".mat" in str(info.value)


# ====================================================================== paths
def test_nonexistent_file_named(tmp_path):
    missing = tmp_path / "nope.mat"
    with pytest.raises(ProbeFileNotFoundError, match="nope.mat") as info:
        load_probe(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ProbeError)


def test_misspelt_preset_name_gets_suggestion():
    with pytest.raises(ProbeFileNotFoundError, match="not a probe preset.*Did you mean 'neuropixels2'"):
        load_probe("neuropixel2")


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "probe.csv"
    path.write_text("x,y\n0,0\n")
    with pytest.raises(ProbeError, match=r"unknown probe file type '\.csv'.*\.mat, \.prb, \.json, \.meta"):
        load_probe(path)
    with pytest.raises(ProbeError, match="is a folder"):
        load_probe(tmp_path)


# ====================================================================== Kilosort .mat
def test_kilosort_mat_one_based_converted_and_connected_kept(tmp_path):
    path = write_ks_mat(
        tmp_path / "chanMap.mat",
        chanMap=np.array([1, 2, 3, 4, 6], np.uint16), chanMap0ind=np.array([0, 1, 2, 3, 5], np.uint16),
        connected=np.array([1, 1, 0, 1, 1], np.uint8), xcoords=np.array([0, 16, 0, 16, 0], np.uint8),
        ycoords=np.array([0, 0, 20, 20, 40.0]), kcoords=np.array([1, 1, 1, 2, 2.0]),
        fs=30000.0, name="tiny")
    probe = load_probe(path, n_channels=7)
    assert probe.chanMap.tolist() == [0, 1, 2, 3, 5]
    assert probe.connected.tolist() == [True, True, False, True, True]
    assert probe.xc.tolist() == [0, 16, 0, 16, 0] and probe.yc.tolist() == [0, 0, 20, 20, 40]
    assert probe.kcoords.tolist() == [1, 1, 1, 2, 2]
    assert probe.NchanTOT == 7 and probe.name == "tiny"
    assert probe.connected_only().chanMap.tolist() == [0, 1, 3, 5]


def test_kilosort_mat_nchantot_default_is_max_plus_one(tmp_path):
    # MATLAB's loadChanMap would default to sum(connected) = 3 here, too few for row 5.
    path = write_ks_mat(tmp_path / "cm.mat", chanMap=np.array([1, 2, 4, 6.0]),
                        connected=np.array([1, 0, 1, 1]), xcoords=np.zeros(4), ycoords=np.arange(4.0))
    probe = load_probe(path)
    assert probe.NchanTOT == 6 and probe.chanMap.tolist() == [0, 1, 3, 5]
    assert probe.name == "cm"  # no name variable: the file name


def test_kilosort_mat_nchantot_from_file_checked_against_argument(tmp_path):
    path = write_ks_mat(tmp_path / "cm.mat", chanMap=np.arange(1, 5), xcoords=np.zeros(4),
                        ycoords=np.arange(4.0), NchanTOT=385.0)
    assert load_probe(path).NchanTOT == 385
    assert load_probe(path, n_channels=385).NchanTOT == 385
    with pytest.raises(ProbeError, match="NchanTOT=385 but n_channels=384.*sync channel"):
        load_probe(path, n_channels=384)


def test_kilosort_mat_row_vectors_and_shankind(tmp_path):
    # Kilosort's Neuropixels files carry shankInd rather than kcoords; createChannelMapFile.m saves
    # chanMap = 1:N, a row vector.
    path = tmp_path / "row.mat"
    scipy.io.savemat(str(path), dict(chanMap=np.arange(1, 5)[None, :], xcoords=np.zeros((1, 4)),
                                     ycoords=np.arange(4.0)[None, :], shankInd=np.full((1, 4), 3)))
    probe = load_probe(path)
    assert probe.chanMap.tolist() == [0, 1, 2, 3] and probe.kcoords.tolist() == [3] * 4


def test_kilosort_mat_missing_coordinates_use_kilosort_defaults(tmp_path, caplog):
    path = write_ks_mat(tmp_path / "bare.mat", chanMap=np.array([1, 2, 3]))
    with caplog.at_level(logging.WARNING, logger="pykilosort.probes.loaders"):
        probe = load_probe(path)
    assert probe.xc.tolist() == [0, 0, 0] and probe.yc.tolist() == [1, 2, 3]
    assert probe.kcoords.tolist() == [1, 1, 1] and probe.connected.all()
    assert "no xcoords" in caplog.text


def test_kilosort_mat_struct_variable_unwrapped(tmp_path):
    path = tmp_path / "struct.mat"
    scipy.io.savemat(str(path), {"cm": {"chanMap": np.array([2.0, 1.0]), "xcoords": np.zeros(2),
                                        "ycoords": np.array([0.0, 20.0])}})
    probe = load_probe(path)
    assert probe.chanMap.tolist() == [1, 0] and probe.yc.tolist() == [0, 20]


def test_kilosort_mat_zero_in_chanmap_is_rejected_as_not_one_based(tmp_path):
    path = write_ks_mat(tmp_path / "zero.mat", chanMap=np.arange(0, 4, dtype=np.uint16),
                        xcoords=np.zeros(4), ycoords=np.arange(4.0))
    with pytest.raises(ProbeError, match="chanMap contains 0.*1-based"):
        load_probe(path)


def test_kilosort_mat_inconsistent_chanmap0ind(tmp_path):
    path = write_ks_mat(tmp_path / "bad.mat", chanMap=np.array([1, 2, 3]),
                        chanMap0ind=np.array([1, 2, 3]), xcoords=np.zeros(3), ycoords=np.arange(3.0))
    with pytest.raises(ProbeError, match="chanMap0ind does not equal chanMap-1"):
        load_probe(path)


def test_kilosort_mat_length_mismatch(tmp_path):
    path = write_ks_mat(tmp_path / "len.mat", chanMap=np.array([1, 2, 3]), xcoords=np.zeros(2),
                        ycoords=np.arange(3.0))
    with pytest.raises(ProbeError, match="xc has 2 entries but chanMap has 3"):
        load_probe(path)


def test_kilosort_mat_without_chanmap(tmp_path):
    path = write_ks_mat(tmp_path / "nomap.mat", xcoords=np.zeros(3), ycoords=np.arange(3.0))
    with pytest.raises(ProbeError, match="no 'chanMap' variable.*xcoords"):
        load_probe(path)


def test_kilosort_mat_v73_gives_resave_advice(tmp_path):
    # A v7.3 file is HDF5 behind a MATLAB header whose version field reads 0x0200.
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ."
    header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"
    path = tmp_path / "v73.mat"
    path.write_bytes(header + b"\x00" * 512)
    with pytest.raises(ProbeError, match=r"v7\.3.*'-v7'"):
        load_probe(path)


def test_garbage_mat_file(tmp_path):
    path = tmp_path / "garbage.mat"
    path.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(ProbeError, match="cannot read .* as a MATLAB .mat file"):
        load_probe(path)


def test_kilosort_mat_round_trip_of_preset(tmp_path):
    probe = neuropixels1()
    path = write_ks_mat(tmp_path / "np1.mat", chanMap=(probe.chanMap + 1).astype(np.uint16),
                        chanMap0ind=probe.chanMap.astype(np.uint16), xcoords=probe.xc,
                        ycoords=probe.yc, shankInd=probe.kcoords.astype(np.uint8),
                        connected=probe.connected.astype(np.uint8), name="np1")
    assert load_probe(path, n_channels=385) == probe


# ====================================================================== .prb
PRB_TEXT = """
# two tetrode-like groups; channel 2 of the binary file is not used
channel_groups = {
    0: {'channels': [3, 1, 0],
        'geometry': {3: (0, 0), 1: (0, 20), 0: (0, 40)}},
    1: {'channels': list(range(4, 6)),
        'geometry': {4: (200, 0), 5: (200, 20)}},
}
"""


def test_prb_file(tmp_path):
    path = tmp_path / "tetrodes.prb"
    path.write_text(PRB_TEXT)
    probe = load_probe(path)
    assert probe.chanMap.tolist() == [3, 1, 0, 4, 5]
    assert probe.xc.tolist() == [0, 0, 0, 200, 200] and probe.yc.tolist() == [0, 20, 40, 0, 20]
    assert probe.kcoords.tolist() == [1, 1, 1, 2, 2]
    assert probe.NchanTOT == 6 and probe.name == "tetrodes" and probe.connected.all()
    assert load_probe(path, n_channels=10).NchanTOT == 10
    with pytest.raises(ProbeError, match="entry 5 but the file holds only NchanTOT=5"):
        load_probe(path, n_channels=5)


def test_bad_prb_file(tmp_path):
    path = tmp_path / "bad.prb"
    path.write_text("groups = {}\n")
    with pytest.raises(ProbeError, match="cannot read .*bad.prb.* as a .prb probe file.*channel_groups"):
        load_probe(path)


# ====================================================================== probeinterface objects and .json
def test_probeinterface_json_round_trip_drops_unwired(tmp_path):
    probe = pi.generate_linear_probe(num_elec=6, ypitch=20)
    probe.set_device_channel_indices([5, 4, -1, 2, 1, 0])  # contact 2 is not recorded
    path = tmp_path / "linear.json"
    pi.write_probeinterface(path, probe)
    loaded = load_probe(path, n_channels=8)
    assert loaded.chanMap.tolist() == [5, 4, 2, 1, 0]
    assert loaded.yc.tolist() == [0, 20, 60, 80, 100]
    np.testing.assert_array_equal(loaded.xc, probe.contact_positions[[0, 1, 3, 4, 5], 0])
    assert loaded.NchanTOT == 8 and loaded.kcoords.tolist() == [1] * 5
    assert load_probe(path).NchanTOT == 6  # max(chanMap) + 1


def test_probeinterface_probegroup_shanks_and_probes_become_kcoords():
    group = pi.generate_multi_shank(num_shank=2, num_columns=1, num_contact_per_column=3)
    group.set_device_channel_indices(np.arange(6))
    second = pi.generate_linear_probe(num_elec=2)
    second.move([1000, 0])
    second.set_device_channel_indices([6, 7])
    pg = pi.ProbeGroup()
    pg.add_probe(group)
    pg.add_probe(second)
    probe = load_probe(pg)
    assert probe.chanMap.tolist() == list(range(8))
    assert probe.kcoords.tolist() == [1, 1, 1, 2, 2, 2, 3, 3]
    assert probe.xc[-2:].tolist() == [1000, 1000]
    assert load_probe(group).kcoords.tolist() == [1, 1, 1, 2, 2, 2]


def test_probeinterface_without_wiring_explains_fix(tmp_path):
    probe = pi.generate_linear_probe(num_elec=4)
    with pytest.raises(ProbeError, match=r"device_channel_indices is not set.*set_device_channel_indices"):
        load_probe(probe)
    path = tmp_path / "unwired.json"
    pi.write_probeinterface(path, probe)
    with pytest.raises(ProbeError, match="device_channel_indices is not set"):
        load_probe(path)


def test_probeinterface_duplicate_wiring_rejected():
    probe = pi.generate_linear_probe(num_elec=3)
    probe.set_device_channel_indices([0, 1, 1])
    with pytest.raises(ProbeError, match="more than once"):
        load_probe(probe)


def test_json_of_probe_to_dict(tmp_path):
    probe = small_probe()
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(probe.to_dict()))
    assert load_probe(path) == probe


def test_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ProbeError, match="not valid JSON"):
        load_probe(path)
    path.write_text('{"some": "thing"}')
    with pytest.raises(ProbeError, match="as a probeinterface .json file"):
        load_probe(path)


# ====================================================================== SpikeGLX .meta
def test_spikeglx_np1_without_part_number(tmp_path):
    # phase 3B-style meta: imDatPrb_type=0 and no imDatPrb_pn (inferred as NP1000)
    path = write_meta(tmp_path / "rec_g0_t0.imec0.ap.meta", np1_imro(), extra={"imDatPrb_type": 0})
    probe = load_probe(path)
    assert probe.NchanTOT == 385 and probe.Nchan == 384  # sync channel saved, not mapped
    assert probe.chanMap.tolist() == list(range(384))
    assert probe.kcoords.tolist() == [1] * 384 and probe.name == "rec_g0_t0"
    # probeinterface's layout is Kilosort's NP1.0 file mirrored: same distances between sites
    np.testing.assert_allclose(pairwise_distances(probe), pairwise_distances(neuropixels1()))
    assert np.unique(np.diff(np.unique(probe.yc))).tolist() == [20]


def test_spikeglx_np1_channel_subset_saved(tmp_path):
    path = write_meta(tmp_path / "sub.ap.meta", np1_imro(), n_saved=11, subset="0:9,384",
                      extra={"imDatPrb_pn": "NP1000"})
    probe = load_probe(path)
    assert probe.NchanTOT == 11 and probe.chanMap.tolist() == list(range(10))
    full = load_probe(write_meta(tmp_path / "full.ap.meta", np1_imro(),
                                 extra={"imDatPrb_pn": "NP1000"}))
    np.testing.assert_array_equal(probe.yc, full.yc[:10])
    np.testing.assert_array_equal(probe.xc, full.xc[:10])


def test_spikeglx_np2_single_shank(tmp_path):
    path = write_meta(tmp_path / "np2.ap.meta", np2_imro(),
                      extra={"imDatPrb_type": 21, "imDatPrb_pn": "NP2000"})
    probe = load_probe(path, n_channels=385)
    preset = neuropixels2()
    assert probe.NchanTOT == 385 and probe.chanMap.tolist() == list(range(384))
    np.testing.assert_array_equal(probe.xc, preset.xc)
    np.testing.assert_array_equal(probe.yc, preset.yc)


def test_spikeglx_np2_part_number_inferred_from_type(tmp_path):
    path = write_meta(tmp_path / "np2.ap.meta", np2_imro(), extra={"imDatPrb_type": 21})
    assert np.array_equal(load_probe(path).yc, neuropixels2().yc)


def test_spikeglx_np2_four_shanks(tmp_path):
    path = write_meta(tmp_path / "ms.ap.meta", np24_imro(), extra={"imDatPrb_type": 24})
    probe = load_probe(path)
    assert probe.Nchan == 384 and probe.NchanTOT == 385
    assert probe.kcoords.tolist() == np.repeat([1, 2, 3, 4], 96).tolist()
    # shanks 250 um apart, two columns 32 um apart on each
    assert sorted(set(probe.xc)) == [0, 32, 250, 282, 500, 532, 750, 782]
    assert probe.yc[:96].max() == 15 * 47


def test_spikeglx_bin_path_uses_meta_beside_it(tmp_path):
    write_meta(tmp_path / "rec.ap.meta", np1_imro(), extra={"imDatPrb_pn": "NP1000"})
    (tmp_path / "rec.ap.bin").write_bytes(b"")
    assert load_probe(tmp_path / "rec.ap.bin") == load_probe(tmp_path / "rec.ap.meta")
    (tmp_path / "other.bin").write_bytes(b"")
    with pytest.raises(ProbeFileNotFoundError, match="other.meta"):
        load_probe(tmp_path / "other.bin")


def test_spikeglx_n_channels_must_match_nsavedchans(tmp_path):
    path = write_meta(tmp_path / "a.ap.meta", np1_imro(), extra={"imDatPrb_pn": "NP1000"})
    with pytest.raises(ProbeError, match="NchanTOT=385 but n_channels=384.*sync"):
        load_probe(path, n_channels=384)


def test_spikeglx_meta_missing_fields(tmp_path):
    path = write_meta(tmp_path / "a.ap.meta", np1_imro(), n_saved=None, extra={"imDatPrb_pn": "NP1000"})
    with pytest.raises(ProbeError, match="lacks nSavedChans"):
        load_probe(path)
    path = tmp_path / "b.nidq.meta"
    path.write_text("nSavedChans=9\nsnsSaveChanSubset=all\n")
    with pytest.raises(ProbeError, match="lacks imroTbl.*nidq"):
        load_probe(path)


def test_spikeglx_unknown_probe_type(tmp_path):
    path = write_meta(tmp_path / "x.ap.meta", "(9999,2)(0 0 0 0)(1 0 0 0)", n_saved=3)
    with pytest.raises(ProbeError, match="probe type '9999'.*imDatPrb_pn"):
        load_probe(path)


def test_spikeglx_unreadable_imro(tmp_path):
    path = write_meta(tmp_path / "x.ap.meta", "(0,384)(garbage)", extra={"imDatPrb_pn": "NP1000"})
    with pytest.raises(ProbeError, match="probeinterface could not read the probe"):
        load_probe(path)
