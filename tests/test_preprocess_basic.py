"""Preprocessing against slow, obvious re-implementations of the MATLAB functions."""
import math

import numpy as np
import pytest

from pykilosort import run
from pykilosort.errors import DataQualityError
from pykilosort.filtering import filter_coefficients, gpufilter
from pykilosort.io import read_batch, read_batch_ks25
from pykilosort.kernels import round_int16 as round_like_matlab_int16
from pykilosort.kernels.preprocessing import whiten_sparse
from pykilosort.preprocess import (whitening_from_covariance,
                                   whitening_local)

from conftest import linear_probe, write_noise_with_spikes
from naive import gpufilter_naive as _gpufilter_reference

FAST = dict(NT=8192, nSkipCov=2, device="cpu")
PRE = dict(FAST, stop_after="preprocess")  # these tests are about the steps up to the proc file


@pytest.mark.parametrize("car", [True, False])
@pytest.mark.parametrize("fslow", [None, 6000.0])
def test_gpufilter_matches_line_by_line_reference(rng, car, fslow):
    buff = rng.integers(-2000, 2000, (3000, 11)).astype(np.int16)
    chan_map = np.array([3, 0, 7, 8, 1, 10])
    b, a = filter_coefficients(fs=30000.0, fshigh=150.0, fslow=fslow)
    got = gpufilter(buff, chan_map=chan_map, b=b, a=a, car=car)
    ref = _gpufilter_reference(buff, chan_map, b, a, car)
    assert got.flags.f_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_round_like_matlab_int16():
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, -0.49999997, 40000.2, -40000.0, np.nan,
                  32766.5, -32767.5, 3.4999998], np.float32)
    expected = [1, -1, 2, 3, -3, 0, 0, 32767, -32768, 0, 32767, -32768, 3]
    np.testing.assert_array_equal(round_like_matlab_int16(x), np.array(expected, np.int16))


def test_whitening_from_covariance_whitens(rng):
    a = rng.standard_normal((6, 6))
    cc = a @ a.T + 6 * np.eye(6)
    w = whitening_from_covariance(cc)
    np.testing.assert_allclose(w, w.T, atol=1e-12)
    np.testing.assert_allclose(w @ cc @ w, np.eye(6), atol=1e-6)  # eps=1e-6 in the original


def test_whitening_local_with_all_channels_equals_full(rng):
    a = rng.standard_normal((5, 5))
    cc = a @ a.T + np.eye(5)
    xc, yc = np.zeros(5), np.arange(5) * 20.0
    full = whitening_from_covariance(cc)
    local = whitening_local(cc, xc=xc, yc=yc, n_range=5)
    np.testing.assert_allclose(local, full, atol=1e-10)
    narrow = whitening_local(cc, xc=xc, yc=yc, n_range=2)
    assert np.count_nonzero(narrow[:, 0]) == 2 and narrow[2:, 0].tolist() == [0, 0, 0]


@pytest.fixture
def rec(tmp_path):
    path = write_noise_with_spikes(tmp_path / "rec.bin", n_samples=52000, n_channels=8, n_spikes=3000)
    x = np.fromfile(path, np.int16).reshape(-1, 8)
    x[:, 5] = 0  # a dead channel
    x.tofile(path)
    return path


def test_dead_channel_is_not_good_and_active_ones_are(rec):
    ctx = run(rec, probe=linear_probe(8), stop_after="good_channels", **FAST)
    assert ctx.intermediate.igood.tolist() == [True] * 5 + [False] + [True] * 2


def test_minfr_zero_keeps_every_channel(rec):
    ctx = run(rec, probe=linear_probe(8), stop_after="good_channels", minfr_goodchannels=0, **FAST)
    assert ctx.intermediate.igood.all()


def test_proc_file_is_filter_crop_whiten_round_in_matlab_layout(rec):
    ctx = run(rec, probe=linear_probe(8), **PRE)
    p, d = ctx.params, ctx.derived
    nchan = int(ctx.intermediate.igood.sum())
    proc = np.fromfile(ctx.intermediate.proc, np.int16)
    assert proc.size == d.Nbatch * p.NT * nchan
    b, a = filter_coefficients(fs=p.fs, fshigh=p.fshigh)
    wrot = np.asarray(ctx.intermediate.Wrot, np.float32)
    for ib in (0, 3, d.Nbatch - 1):  # first (no front buffer), middle, last (padded)
        buff, ioff = read_batch(ctx.raw_data, ib, NT=p.NT, ntbuff=p.ntbuff, NTbuff=d.NTbuff,
                                tstart=0, hi=ctx.raw_data.n_samples)
        datr = _gpufilter_reference(buff, ctx.intermediate.chanMap, b, a, True)[ioff: ioff + p.NT]
        expected = round_like_matlab_int16((datr @ wrot).astype(np.float32))
        block = proc[ib * p.NT * nchan: (ib + 1) * p.NT * nchan].reshape(p.NT, nchan, order="F")
        assert np.abs(block.astype(int) - expected).max() <= 1  # float32 summation order only


@pytest.mark.parametrize("ks25", [False, True])
def test_local_whitening_on_many_channels_skips_the_zero_weights(tmp_path, monkeypatch, ks25):
    """whiteningRange=4 on 32 channels: 1/8 of the weights are non-zero, so the CPU product runs
    over those only (as at 384 channels with the default 32); the proc file is still the
    whitened batch, within one int16 step of the dense float32 product."""
    import pykilosort.preprocess as pre

    calls = []
    monkeypatch.setattr(pre, "whiten_sparse",
                        lambda datr, *, cols: calls.append(1) or whiten_sparse(datr, cols=cols))
    path = write_noise_with_spikes(tmp_path / "r.bin", n_samples=40000, n_channels=32)
    ctx = run(path, probe=linear_probe(32), whiteningRange=4, minfr_goodchannels=0,
              drift_correction=ks25, **PRE)
    p, d = ctx.params, ctx.derived
    assert len(calls) == d.Nbatch
    wrot = np.asarray(ctx.intermediate.Wrot, np.float32)
    assert (np.count_nonzero(wrot, axis=0) == 4).all()
    proc = np.fromfile(ctx.intermediate.proc, np.int16)
    b, a = filter_coefficients(fs=p.fs, fshigh=p.fshigh)
    reader = read_batch_ks25 if ks25 else read_batch
    buff = reader(ctx.raw_data, 1, NT=p.NT, ntbuff=p.ntbuff, NTbuff=d.NTbuff, tstart=0,
                  hi=ctx.raw_data.n_samples)
    if ks25:  # batch 1 is cross-faded with batch 0's look-ahead over its first ntbuff samples
        datr = _gpufilter_reference(buff, ctx.intermediate.chanMap, b, a, True)
        datr, sl = datr[p.ntbuff: p.ntbuff + p.NT], np.s_[p.ntbuff:]
        block = proc[p.NT * 32: 2 * p.NT * 32].reshape(p.NT, 32)
    else:
        buff, ioff = buff
        datr = _gpufilter_reference(buff, ctx.intermediate.chanMap, b, a, True)
        datr, sl = datr[ioff: ioff + p.NT], np.s_[:]
        block = proc[p.NT * 32: 2 * p.NT * 32].reshape(p.NT, 32, order="F")
    expected = round_like_matlab_int16((datr @ wrot).astype(np.float32))
    assert np.abs(block[sl].astype(int) - expected[sl]).max() <= 1
    assert np.abs(block[sl]).max() > 100  # whitened spikes, not an empty file


def test_whitened_noise_is_decorrelated(tmp_path, rng):
    n, c = 60000, 8
    mix = np.eye(c) + 0.6 * np.eye(c, k=1) + 0.6 * np.eye(c, k=-1)
    (rng.standard_normal((n, c)) @ mix * 30).astype(np.int16).tofile(tmp_path / "c.bin")
    ctx = run(tmp_path / "c.bin", probe=linear_probe(c), minfr_goodchannels=0, **PRE)
    proc = np.fromfile(ctx.intermediate.proc, np.int16).reshape(-1, c, ctx.params.NT)
    x = proc[1].astype(float)
    corr = np.corrcoef(x)
    assert np.abs(corr[~np.eye(c, dtype=bool)]).max() < 0.1  # raw neighbours correlate at ~0.5
    assert np.allclose(x.std(axis=1), 200, rtol=0.1)  # unit variance x scaleproc


def test_matlab_compat_covariance_divisor(tmp_path, rng):
    """The original divides by ceil((Nbatch-1)/nSkipCov), not the number of batches summed."""
    path = tmp_path / "r.bin"
    NT, ntbuff = 8192, 64
    n = 7 * (NT - ntbuff) - 100  # Nbatch = 7; nSkipCov=2 sums batches 0,2,4,6 (4) but divides by 3
    (rng.standard_normal((n, 4)) * 50).astype(np.int16).tofile(path)
    kw = dict(probe=linear_probe(4), minfr_goodchannels=0, stop_after="whitening", **FAST)
    fixed = run(path, **kw)
    compat = run(path, matlab_compat=True, **kw)
    assert fixed.derived.Nbatch == 7
    np.testing.assert_allclose(compat.intermediate.CC, fixed.intermediate.CC * 4 / 3, rtol=1e-6)
    np.testing.assert_allclose(compat.intermediate.Wrot, fixed.intermediate.Wrot * math.sqrt(3 / 4),
                               rtol=1e-4)


def test_matlab_compat_single_batch_is_a_clear_error(tmp_path, rng):
    path = tmp_path / "short.bin"
    (rng.standard_normal((5000, 4)) * 50).astype(np.int16).tofile(path)
    with pytest.raises(DataQualityError, match=r"ceil\(\(Nbatch-1\)/nSkipCov\).*0 for a single batch"):
        run(path, probe=linear_probe(4), minfr_goodchannels=0, matlab_compat=True, **PRE)
    # the default (fixed) divide handles a recording shorter than one batch
    ctx = run(path, probe=linear_probe(4), minfr_goodchannels=0, **PRE)
    assert ctx.intermediate.Nbatch == 1 and np.isfinite(ctx.intermediate.Wrot).all()


@pytest.mark.parametrize("ks25", [False, True])
def test_identical_output_on_rerun_and_across_thread_counts(tmp_path, ks25):
    import hashlib

    path = write_noise_with_spikes(tmp_path / "r.bin", n_samples=60000, n_channels=8)
    digests = []
    for n_threads in (2, 1, 2):
        ctx = run(path, probe=linear_probe(8), clear_context=True, n_threads=n_threads,
                  drift_correction=ks25, **PRE)
        digests.append((hashlib.sha256(ctx.intermediate.proc.read_bytes()).hexdigest(),
                        np.asarray(ctx.intermediate.Wrot).tobytes()))
    assert digests[0] == digests[1] == digests[2]


def test_good_channels_edge_of_a_short_last_stretch(tmp_path):
    """get_good_channels ignores crossings within nt0 of a stretch's ends, but measures the end
    from NT even when the last stretch is shorter; matlab_compat keeps that, the default measures
    from the stretch's real end. Channel 2's only spike sits 40 samples before the file ends."""
    NT, n = 8192, 8192 + 3000
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, 4)) * 20
    for t in range(200, n - 400, 700):   # spikes on channels 0, 1 and 3, one channel at a time
        for k, c in enumerate((0, 1, 3)):  # (the common median reference would remove them)
            x[t + 230 * k:t + 230 * k + 6, c] -= 600
    x[n - 40:n - 34, 2] -= 2000
    path = tmp_path / "edge.bin"
    x.astype(np.int16).tofile(path)
    igood = {}
    for compat in (True, False):
        ctx = run(path, probe=linear_probe(4), dir_path=tmp_path / str(compat), NT=NT,
                  minfr_goodchannels=0.1, stop_after="good_channels", matlab_compat=compat,
                  device="cpu")
        igood[compat] = ctx.intermediate.igood
    np.testing.assert_array_equal(igood[True], [True, True, True, True])
    np.testing.assert_array_equal(igood[False], [True, True, False, True])
