"""Raw data: multi-file concatenation, size checks, padded reads, Kilosort2 batch geometry."""
import numpy as np
import pytest

from pykilosort.errors import RawDataError
from pykilosort.io import (RawData, channel_counts_fitting, read_batch, read_batch_ks25,
                           read_spikeglx_meta)


@pytest.fixture
def three_files(tmp_path, rng):
    parts = [rng.integers(-1000, 1000, (n, 5)).astype(np.int16) for n in (100, 37, 250)]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"part{i}.bin")
        part.tofile(paths[-1])
    return paths, np.concatenate(parts)


def test_concatenation_in_given_order(three_files):
    paths, full = three_files
    raw = RawData(paths, n_channels=5)
    assert raw.shape == full.shape and raw.name == "part0+2"
    for start, stop in [(0, 387), (90, 140), (100, 137), (136, 138), (0, 1), (386, 387), (50, 50)]:
        np.testing.assert_array_equal(raw.read(start, stop), full[start:stop])
    reordered = RawData(paths[::-1], n_channels=5)
    np.testing.assert_array_equal(reordered.read(0, 250), full[137:])


def test_out_of_range_read(three_files):
    raw = RawData(three_files[0], n_channels=5)
    with pytest.raises(RawDataError, match=r"cannot read samples \[380, 400\) of a recording with 387"):
        raw.read(380, 400)


def test_read_padded_repeats_last_sample(three_files):
    paths, full = three_files
    raw = RawData(paths, n_channels=5)
    out = raw.read_padded(380, 395)
    np.testing.assert_array_equal(out[:7], full[380:])
    np.testing.assert_array_equal(out[7:], np.repeat(full[-1:], 8, axis=0))
    out = raw.read_padded(10, 30, hi=20)  # padding from an explicit end (e.g. tend)
    np.testing.assert_array_equal(out[10:], np.repeat(full[19:20], 10, axis=0))


def test_other_dtypes(tmp_path, rng):
    x = rng.standard_normal((64, 3)).astype(np.float32)
    x.tofile(tmp_path / "f.bin")
    np.testing.assert_array_equal(RawData(tmp_path / "f.bin", n_channels=3, dtype="float32").read(0, 64), x)


def test_wrong_channel_count_lists_counts_that_fit(tmp_path):
    np.zeros((1000, 385), np.int16).tofile(tmp_path / "np.bin")
    with pytest.raises(RawDataError) as info:
        RawData(tmp_path / "np.bin", n_channels=384)
    msg = str(info.value)
    assert "not a whole number of samples for n_channels=384 x 2 bytes" in msg
    assert "385" in msg and "384 + sync" in msg


def test_odd_byte_count_blames_dtype(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\0" * 1001)
    with pytest.raises(RawDataError, match="not even a multiple of the 2-byte sample type"):
        RawData(tmp_path / "odd.bin", n_channels=4)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(RawDataError, match="not found"):
        RawData(tmp_path / "nope.bin", n_channels=4)
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(RawDataError, match="is empty"):
        RawData(tmp_path / "empty.bin", n_channels=4)


def test_channel_counts_fitting():
    fits = channel_counts_fitting(385 * 1000, max_channels=400)
    assert fits == [n for n in range(1, 401) if 385000 % n == 0]
    assert 385 in fits and 384 not in fits and fits[-3:] == [308, 350, 385]


def test_key_changes_with_content_size_and_layout(tmp_path):
    p = tmp_path / "a.bin"
    np.zeros((100, 4), np.int16).tofile(p)
    k1 = RawData(p, n_channels=4).key()
    assert RawData(p, n_channels=2).key() != k1
    np.zeros((104, 4), np.int16).tofile(p)
    assert RawData(p, n_channels=4).key() != k1


def _matlab_batch(data, ibatch1, *, NT, ntbuff, tstart):
    """preprocessDataSub.m's read, literally (1-based ibatch, byte offsets, fread, repmat padding)."""
    nchan = data.shape[1]
    twind = tstart * nchan * 2
    offset = max(0, twind + 2 * nchan * ((NT - ntbuff) * (ibatch1 - 1) - 2 * ntbuff))
    ioffset = 0 if offset == 0 else ntbuff
    s0 = offset // (2 * nchan)
    buff = data[s0: s0 + NT + 4 * ntbuff]
    if buff.shape[0] < NT + 4 * ntbuff:
        buff = np.concatenate([buff, np.repeat(buff[-1:], NT + 4 * ntbuff - buff.shape[0], 0)])
    return buff, ioffset


@pytest.mark.parametrize("tstart", [0, 7, 300])
def test_read_batch_matches_matlab_geometry(tmp_path, rng, tstart):
    data = rng.integers(-500, 500, (1500, 3)).astype(np.int16)
    half = 700  # two files: batches straddle the boundary
    data[:half].tofile(tmp_path / "a.bin")
    data[half:].tofile(tmp_path / "b.bin")
    raw = RawData([tmp_path / "a.bin", tmp_path / "b.bin"], n_channels=3)
    NT, ntbuff = 256, 32
    nbatch = int(np.ceil((1500 - tstart) / (NT - ntbuff)))
    for ib in range(nbatch):
        buff, ioff = read_batch(raw, ib, NT=NT, ntbuff=ntbuff, NTbuff=NT + 4 * ntbuff, tstart=tstart,
                                hi=raw.n_samples)
        ref, ref_ioff = _matlab_batch(data, ib + 1, NT=NT, ntbuff=ntbuff, tstart=tstart)
        assert ioff == ref_ioff
        np.testing.assert_array_equal(buff, ref)


def test_spikeglx_meta_parser(tmp_path):
    (tmp_path / "r.meta").write_text("nSavedChans=385\nimSampRate=30000.5\n~imroTbl=(0,384)(1 0 0 500 250 1)\n")
    meta = read_spikeglx_meta(tmp_path / "r.meta")
    assert meta["nSavedChans"] == "385" and meta["imSampRate"] == "30000.5"
    assert meta["imroTbl"].startswith("(0,384)")


def _matlab_batch_ks25(data, ibatch1, *, NT, ntbuff, tstart):
    """v2.5 preprocessDataSub.m's read, literally: offset, fread, end padding, front padding."""
    nchan, ntbuff_total = data.shape[1], NT + 3 * ntbuff
    offset = max(0, tstart * nchan * 2 + 2 * nchan * (NT * (ibatch1 - 1) - ntbuff))
    s0 = offset // (2 * nchan)
    buff = data[s0: s0 + ntbuff_total]
    if buff.shape[0] < ntbuff_total:
        buff = np.concatenate([buff, np.repeat(buff[-1:], ntbuff_total - buff.shape[0], 0)])
    if offset == 0:
        buff = np.concatenate([np.repeat(buff[:1], ntbuff, 0), buff[: ntbuff_total - ntbuff]])
    return buff


@pytest.mark.parametrize("tstart", [0, 20, 300])
def test_read_batch_ks25_matches_matlab_geometry(tmp_path, rng, tstart):
    data = rng.integers(-500, 500, (1500, 3)).astype(np.int16)
    data.tofile(tmp_path / "a.bin")
    raw = RawData(tmp_path / "a.bin", n_channels=3)
    NT, ntbuff = 256, 32
    for ib in range(int(np.ceil((1500 - tstart) / NT))):
        buff = read_batch_ks25(raw, ib, NT=NT, ntbuff=ntbuff, NTbuff=NT + 3 * ntbuff, tstart=tstart,
                               hi=raw.n_samples)
        np.testing.assert_array_equal(buff, _matlab_batch_ks25(data, ib + 1, NT=NT, ntbuff=ntbuff,
                                                               tstart=tstart))
