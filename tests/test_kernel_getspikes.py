"""getspikes (mexGetSpikes2): numba twin vs a block-by-block emulation of the original; CUDA vs twin."""
import numpy as np
import pytest

from template_problems import generic_temporal_templates

from pykilosort.errors import KilosortError
from pykilosort.kernels.getspikes import (DEFAULT_MAX_SPIKES, SpikeCapacityError, _best_channel_twin,
                                          _CHANNEL_RANGE, _keep_highest_twin, _local_peaks_twin,
                                          _scores_twin, MexCoverage, detect_new_spikes, mex_coverage)
from pykilosort.kernels.registry import cuda_source_path, nvcc_compile, registered
from pykilosort.neighbours import get_closest_channels

NTHREADS = 1024  # the original's Nthreads
MAXFR = 5000     # the original's maxFR

# ------------------------------------------------------------------------------ slow reference
# Each function is one __global__ of mexGetSpikes2.cu, emulated block by block with the original's
# 1024-thread blocks and its loop bounds; the threads of a block are a numpy vector (or a Python
# loop). Arrays are indexed [t, channel, rank] instead of column-major offsets.


def naive_conv1d(data, w):
    """Conv1D<<<Nchan, 1024>>>: per channel, tiles of 1024 samples while the tile fits."""
    NT, nchan = data.shape
    nt0, nrank = w.shape
    dfilt = np.zeros((NT, nchan, nrank), np.float32)  # cudaMemset 0
    tid = np.arange(NTHREADS)
    for bid in range(nchan):
        tid0 = 0
        while tid0 < NT - NTHREADS - nt0 + 1:
            sdata = data[tid0:tid0 + NTHREADS + nt0, bid]
            for nid in range(nrank):
                y = np.zeros(NTHREADS, np.float32)
                for i in range(nt0):
                    y += w[i, nid] * sdata[i + tid]
                dfilt[tid0 + tid, bid, nid] = y
            tid0 += NTHREADS
    return dfilt


def naive_sum_channels(dfilt, iC, n_sum):
    """sumChannels<<<NT/1024, 1024>>>, grid-stride over samples; returns datasum (= cmap)."""
    NT, nchan, nrank = dfilt.shape
    datasum = np.zeros((NT, nchan), np.float32)
    nblocks = NT // NTHREADS
    for bid in range(nblocks):
        tid0 = bid * NTHREADS + np.arange(NTHREADS)
        while True:
            t = tid0[tid0 < NT]
            if t.size == 0:
                break
            for i in range(nchan):
                cmax = np.zeros(t.size, np.float32)
                for r in range(nrank):
                    cf = np.zeros(t.size, np.float32)
                    for j in range(n_sum):
                        cf = cf + dfilt[t, iC[j, i], r]
                        score = cf * cf / np.float32(1 + j)
                        cmax = np.where(score > cmax, score, cmax)
                datasum[t, i] = cmax
            tid0 = tid0 + NTHREADS * nblocks
    return datasum


def naive_best_filter(datasum):
    """bestFilter<<<NT/1024, 1024>>>: Cbest and ibest are initialised once per thread."""
    NT, nchan = datasum.shape
    err = np.zeros(NT, np.float32)
    ftype = np.zeros(NT, np.int64)
    nblocks = NT // NTHREADS
    for bid in range(nblocks):
        for tid in range(NTHREADS):
            cbest, ibest = np.float32(0), 0
            tid0 = tid + bid * NTHREADS
            while tid0 < NT:
                for i in range(nchan):
                    cf = datasum[tid0, i]
                    if float(cf) > float(cbest) + 1e-6:  # double literal: compared in double
                        cbest, ibest = cf, i
                err[tid0], ftype[tid0] = cbest, ibest
                tid0 += NTHREADS * nblocks
    return err, ftype


def naive_cleanup_spikes(err, ftype, nt0, th):
    """cleanup_spikes<<<NT/1024, 1024>>>: candidates in one valid atomic order, and the counter."""
    NT = err.size
    lockout = nt0 - 1
    th = np.float32(th)
    st, ids, xs = [], [], []
    counter = 0
    nblocks = NT // NTHREADS
    for bid in range(nblocks):
        tid0 = bid * NTHREADS
        while tid0 < NT - NTHREADS - lockout + 1:
            sdata = np.zeros(NTHREADS + 2 * lockout, np.float32)
            sdata[:2 * lockout] = err[tid0:tid0 + 2 * lockout]
            for tid in range(NTHREADS):
                if tid0 + tid + 2 * lockout < NT:
                    sdata[tid + 2 * lockout] = err[2 * lockout + tid0 + tid]
            for tid in range(NTHREADS):
                err0 = sdata[tid + lockout]
                t0 = tid + lockout + tid0
                if err0 > th * th and t0 < NT - lockout - 1:
                    if not any(sdata[tid + lockout + j] > err0 for j in range(-lockout, lockout + 1)):
                        if counter < MAXFR:
                            st.append(t0)
                            ids.append(ftype[t0])
                            xs.append(err0)
                        counter += 1
            tid0 += NTHREADS * nblocks
    return np.array(st, np.int64), np.array(ids, np.int64), np.array(xs, np.float32), counter


def naive_cleanup_heights(ids, xs):
    """cleanup_heights: indices of candidates that no nearby-channel candidate exceeds."""
    kept = []
    for k in range(ids.size):
        # `if (d<5 && xmax< s_x[t])` in the original's cleanup_heights: the literal, not ours
        if not any(abs(ids[m] - ids[k]) < 5 and xs[k] < xs[m] for m in range(ids.size)):
            kept.append(k)
    return np.array(kept, np.int64)


def naive_mex_get_spikes2(data, w, iC, th, n_sum):
    """The whole mex: dict of dWU (nt0, Nchan, n), cmap, st, id, x (sorted by time), counter."""
    data = np.asarray(data, np.float32)
    w = np.asarray(w, np.float32)
    nt0 = w.shape[0]
    cmap = naive_sum_channels(naive_conv1d(data, w), iC, n_sum)
    err, ftype = naive_best_filter(cmap)
    st, ids, xs, counter = naive_cleanup_spikes(err, ftype, nt0, th)
    kept = naive_cleanup_heights(ids, xs)
    order = kept[np.argsort(st[kept], kind="stable")]
    st, ids, xs = st[order], ids[order], xs[order]
    dwu = np.zeros((nt0, data.shape[1], st.size), np.float32)
    for ind in range(st.size):  # extract_snips
        for tidy in range(data.shape[1]):
            dwu[:, tidy, ind] = data[st[ind]:st[ind] + nt0, tidy]
    return dict(dWU=dwu, cmap=cmap, st=st, id=ids, x=xs, counter=counter)


# ------------------------------------------------------------------------------ synthetic data
_templates = generic_temporal_templates


def _batch(rng, *, NT, nchan, w, n_spikes, amp=12.0, times=(), chans=()):
    """Unit noise plus template-shaped spikes spread over 3 channels; explicit (times, chans) too."""
    nt0 = w.shape[0]
    x = rng.standard_normal((NT, nchan))
    ts = list(rng.integers(0, NT - nt0 + 1, n_spikes)) + list(times)
    cs = list(rng.integers(0, nchan, n_spikes)) + list(chans)
    for t, c in zip(ts, cs):
        wave = w[:, rng.integers(w.shape[1])] * amp * rng.uniform(0.7, 1.5)
        for dc, gain in ((-1, 0.5), (0, 1.0), (1, 0.5)):
            if 0 <= c + dc < nchan:
                x[t:t + nt0, c + dc] += gain * wave
    return np.asfortranarray(x, dtype=np.float32)


def _geometric_iC(nchan, n_near):
    xc = np.tile([0.0, 32.0], nchan)[:nchan]
    yc = np.arange(nchan) * 20.0
    return get_closest_channels(xc=xc, yc=yc, sigma_mask=30.0, n_closest=n_near)[0]


def _assert_same(got, ref):
    np.testing.assert_array_equal(got.cmap, ref["cmap"])
    np.testing.assert_array_equal(got.times, ref["st"])
    np.testing.assert_array_equal(got.channels, ref["id"])
    np.testing.assert_array_equal(got.heights, ref["x"])
    np.testing.assert_array_equal(got.snippets, ref["dWU"])
    assert got.snippets.flags.f_contiguous and got.cmap.flags.f_contiguous


# (NT, Nchan, nt0, Nrank, n_near, n_sum, n_spikes, th): ragged NTs with partial 1024-tiles,
# NT % 1024 >= nt0 (peaks reach the inherited tail) and < nt0, one channel, n_sum = n_near
CASES = [
    (1100, 5, 61, 6, 5, 5, 3, 6.0),
    (2112, 9, 61, 6, 9, 7, 12, 6.0),     # 2*1024 + 64: the shape of the default NT = 64*1024 + 64
    (2090, 12, 7, 3, 8, 4, 20, 5.0),
    (3135, 33, 20, 2, 32, 7, 40, 6.0),
    (1500, 1, 11, 1, 1, 1, 4, 4.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "NT%d_C%d_nt%d" % c[:3])
@pytest.mark.parametrize("layout", ["geometric", "random"])
def test_twin_equals_mex_emulation(rng, case, layout):
    NT, nchan, nt0, nrank, n_near, n_sum, n_spikes, th = case
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, NT=NT, nchan=nchan, w=w, n_spikes=n_spikes,
                  times=[0, 3, NT - nt0 - 5], chans=[0, nchan - 1, nchan - 1])
    if layout == "geometric":
        iC = _geometric_iC(nchan, n_near)
    else:
        iC = np.stack([rng.integers(0, nchan, n_near) for _ in range(nchan)], axis=1)
    ref = naive_mex_get_spikes2(data, w, iC, th, n_sum)
    got = detect_new_spikes(data, templates=w, iC=iC, th=th, n_sum=n_sum)
    assert ref["counter"] >= 2 and ref["st"].size >= 1  # the case exercises detection
    _assert_same(got, ref)
    assert got.times.dtype == np.int64 and got.channels.dtype == np.int64
    with pytest.raises(SpikeCapacityError, match=f"found {ref['counter']} candidate"):
        detect_new_spikes(data, templates=w, iC=iC, th=th, n_sum=n_sum, max_spikes=ref["counter"] - 1)


def test_c_order_input_and_int32_iC(rng):
    w = _templates(rng, 15, 3)
    data = _batch(rng, NT=2100, nchan=6, w=w, n_spikes=10)
    iC = _geometric_iC(6, 6)
    ref = detect_new_spikes(data, templates=w, iC=iC, th=5.0, n_sum=4)
    got = detect_new_spikes(np.ascontiguousarray(data), templates=w.astype(np.float64),
                            iC=iC.astype(np.int32, order="C"), th=5.0, n_sum=4)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)


def test_deterministic(rng):
    w = _templates(rng, 61, 6)
    data = _batch(rng, NT=3200, nchan=20, w=w, n_spikes=40)
    iC = _geometric_iC(20, 20)
    a = detect_new_spikes(data, templates=w, iC=iC, th=6.0, n_sum=7)
    b = detect_new_spikes(data, templates=w, iC=iC, th=6.0, n_sum=7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------ the quirks
def _loops_coverage(NT, nt0):
    """The sample sets each stage touches, by running the original's loop bounds literally."""
    lockout = nt0 - 1
    conv = set()
    tid0 = 0
    while tid0 < NT - NTHREADS - nt0 + 1:
        conv.update(range(tid0, tid0 + NTHREADS))
        tid0 += NTHREADS
    nblocks = NT // NTHREADS
    peaks = set()
    for bid in range(nblocks):
        tid0 = bid * NTHREADS
        while tid0 < NT - NTHREADS - lockout + 1:
            peaks.update(t for t in range(tid0 + lockout, tid0 + lockout + NTHREADS)
                         if t < NT - lockout - 1)
            tid0 += NTHREADS * nblocks
    return conv, NTHREADS * nblocks, peaks


@pytest.mark.parametrize("nt0", [1, 2, 7, 61, 81])
def test_mex_coverage_equals_the_original_loops(nt0):
    for NT in list(range(nt0, 3300, 37)) + [1024, 1024 + nt0, 2048 + nt0 - 1, 2048 + nt0, 65600, 65472]:
        cov = mex_coverage(NT, nt0)
        conv, stride, peaks = _loops_coverage(NT, nt0)
        assert set(range(cov.n_conv)) == conv, NT
        assert cov.stride == stride and cov.lockout == nt0 - 1
        assert set(range(cov.peak_start, cov.peak_stop)) == peaks, NT
    # the defaults of v2.0 (NT = 64*1024 + 64) and v2.0.2 (NT = 64*1024 - 64)
    assert mex_coverage(65600, 61) == MexCoverage(65536, 65536, 60, 60, 65539)
    assert mex_coverage(65472, 61) == MexCoverage(64512, 64512, 60, 60, 64572)


def test_quirks_visible_in_output(rng):
    """The projection stops at n_conv; the tail t >= stride inherits err of t - stride, so a spike
    in the first samples of the batch reappears as a detection one stride later."""
    nt0, NT = 61, 2248
    cov = mex_coverage(NT, nt0)
    assert cov.n_conv == cov.stride == 2048 and cov.peak_stop > cov.stride
    w = _templates(rng, nt0, 2)
    data = 0.1 * rng.standard_normal((NT, 4)).astype(np.float32)
    data[5:5 + nt0, 2] += 40 * w[:, 0]    # at t = 5 < lockout: not detectable where it is
    data[2150:2150 + nt0, 1] += 40 * w[:, 0]  # beyond n_conv: never projected
    data = np.asfortranarray(data)
    got = detect_new_spikes(data, templates=w, iC=_geometric_iC(4, 4), th=6.0, n_sum=2)
    assert np.all(got.cmap[cov.n_conv:] == 0)
    assert got.times.tolist() == [5 + cov.stride] and got.channels.tolist() == [2]
    np.testing.assert_array_equal(got.snippets[:, :, 0], data[5 + cov.stride:5 + cov.stride + nt0])
    _assert_same(got, naive_mex_get_spikes2(data, w, _geometric_iC(4, 4), 6.0, 2))


# ------------------------------------------------------------------------------ edge cases
def test_short_batches_find_nothing(rng):
    w = _templates(rng, 20, 2)
    iC = _geometric_iC(3, 3)
    for NT in (20, 100, 1023, 1043):  # no full projection tile (NT < 1024 + nt0)
        data = np.asfortranarray(50 * rng.standard_normal((NT, 3)).astype(np.float32))
        got = detect_new_spikes(data, templates=w, iC=iC, th=1.0, n_sum=3)
        assert got.snippets.shape == (20, 3, 0) and got.times.size == 0
        assert got.cmap.shape == (NT, 3) and not got.cmap.any()


def test_no_spikes_above_threshold(rng):
    w = _templates(rng, 61, 6)
    data = _batch(rng, NT=2200, nchan=8, w=w, n_spikes=0)
    got = detect_new_spikes(data, templates=w, iC=_geometric_iC(8, 8), th=100.0, n_sum=7)
    assert got.snippets.shape == (61, 8, 0) and got.times.shape == (0,) and got.cmap.any()


def test_capacity_exceeded_is_reported(rng):
    """A constant batch makes a plateau of equal scores: every sample of the search range is a
    candidate (ties do not suppress each other). The original would keep 5000 at random."""
    w = _templates(rng, 7, 2)
    data = np.ones((7000, 3), np.float32, order="F")
    iC = _geometric_iC(3, 3)
    cov = mex_coverage(7000, 7)
    n_candidates = cov.peak_stop - cov.peak_start
    assert n_candidates > DEFAULT_MAX_SPIKES
    with pytest.raises(SpikeCapacityError, match=f"found {n_candidates} .*raise max_spikes") as info:
        detect_new_spikes(data, templates=w, iC=iC, th=0.5, n_sum=3)
    assert isinstance(info.value, KilosortError)
    got = detect_new_spikes(data, templates=w, iC=iC, th=0.5, n_sum=3, max_spikes=n_candidates)
    assert got.times.size == n_candidates and np.all(got.channels == 0)  # ties: first channel
    small = _batch(rng, NT=2100, nchan=3, w=w, n_spikes=5)
    n = naive_mex_get_spikes2(small, w, iC, 5.0, 3)["counter"]
    with pytest.raises(SpikeCapacityError, match=f"found {n} "):
        detect_new_spikes(small, templates=w, iC=iC, th=5.0, n_sum=3, max_spikes=n - 1)
    assert detect_new_spikes(small, templates=w, iC=iC, th=5.0, n_sum=3, max_spikes=n).times.size


def test_bad_inputs(rng):
    w = _templates(rng, 5, 2)
    x = np.zeros((2000, 3), np.float32)
    iC = _geometric_iC(3, 3)
    with pytest.raises(TypeError, match="float32"):
        detect_new_spikes(x.astype(np.float64), templates=w, iC=iC, th=6, n_sum=2)
    with pytest.raises(ValueError, match="2-D"):
        detect_new_spikes(x[:, 0], templates=w, iC=iC, th=6, n_sum=2)
    with pytest.raises(ValueError, match="0-based"):
        detect_new_spikes(x, templates=w, iC=iC + 1, th=6, n_sum=2)
    with pytest.raises(ValueError, match="NchanNear"):
        detect_new_spikes(x, templates=w, iC=iC, th=6, n_sum=4)
    with pytest.raises(ValueError, match="Nchan=3"):
        detect_new_spikes(x, templates=w, iC=iC[:, :2], th=6, n_sum=2)
    with pytest.raises(ValueError, match="nt0"):
        detect_new_spikes(x[:4], templates=w, iC=iC, th=6, n_sum=2)


# ------------------------------------------------------------------------------ stages, ragged
@pytest.mark.parametrize("n_conv,chunk", [(0, 8), (1, 8), (37, 8), (64, 16), (250, 64)])
def test_scores_twin_ragged_chunks(rng, n_conv, chunk):
    """Partial work chunks (the public path always covers a multiple of 1024 samples)."""
    NT, nchan, nt0 = 300, 5, 9
    w = _templates(rng, nt0, 3)
    data = np.asfortranarray(rng.standard_normal((NT, nchan)).astype(np.float32))
    iC = np.asfortranarray(rng.integers(0, nchan, (4, nchan)).astype(np.int32))
    cmap = np.zeros((NT, nchan), np.float32, order="F")
    _scores_twin(data, np.asfortranarray(w), iC, 4, n_conv, chunk, cmap)
    dfilt = np.zeros((NT, nchan, 3), np.float32)
    for t in range(n_conv):  # plain loops, one output at a time
        for c in range(nchan):
            for r in range(3):
                y = np.float32(0)
                for i in range(nt0):
                    y = np.float32(y + w[i, r] * data[t + i, c])
                dfilt[t, c, r] = y
    padded = np.zeros((NT + NTHREADS, nchan, 3), np.float32)  # sumChannels needs >= 1 block
    padded[:NT] = dfilt
    np.testing.assert_array_equal(cmap, naive_sum_channels(padded, iC, 4)[:NT])


@pytest.mark.parametrize("NT", [1024, 1500, 2047, 2048, 3000])
def test_best_channel_near_ties_and_carry(rng, NT):
    """Scores within 1e-6 of the best do not win (double comparison); the running best carries
    into t >= stride."""
    cmap = rng.uniform(0, 2, (NT, 6)).astype(np.float32)
    cmap[::3, 4] = cmap[::3, 1] + np.float32(5e-7)  # a later channel a hair above: not enough
    cmap[::5, 5] = np.float32(np.float64(cmap[::5].max(axis=1)) + 2e-6)  # enough
    cmap[NT // 1024 * 1024:, :] *= np.float32(0.5)  # the tail can lose to the inherited best
    cmap = np.asfortranarray(cmap)
    err, ftype = _best_channel_twin(cmap, NT // NTHREADS * NTHREADS, 64)
    ref_err, ref_ftype = naive_best_filter(cmap)
    np.testing.assert_array_equal(err, ref_err)
    np.testing.assert_array_equal(ftype, ref_ftype)


def test_local_peaks_and_heights_with_ties(rng):
    NT, nt0 = 2200, 11
    err = rng.uniform(0, 30, NT).astype(np.float32)
    err[300:320] = 50  # a plateau: every sample of it is a peak
    err[700] = err[705] = 60
    ftype = rng.integers(0, 12, NT)
    ftype[700], ftype[705] = 3, 7  # equal heights on nearby channels: both kept
    cov = mex_coverage(NT, nt0)
    is_peak = _local_peaks_twin(err, cov.lockout, cov.peak_start, cov.peak_stop, np.float32(4.0) ** 2)
    st, ids, xs, counter = naive_cleanup_spikes(err, ftype, nt0, 4.0)
    np.testing.assert_array_equal(np.flatnonzero(is_peak), np.sort(st))
    assert counter == st.size and {300, 319, 700, 705} <= set(st.tolist())
    keep = _keep_highest_twin(ids, xs, _CHANNEL_RANGE)  # ours, against the reference's d<5
    np.testing.assert_array_equal(np.flatnonzero(keep), naive_cleanup_heights(ids, xs))
    assert keep[list(st).index(700)] and keep[list(st).index(705)]
    # channels 5 apart do not compete, 4 apart do (whatever their times)
    ids, xs = np.array([0, 5, 9, 13, 13]), np.array([10, 20, 15, 16, 16], np.float32)
    np.testing.assert_array_equal(_keep_highest_twin(ids, xs, _CHANNEL_RANGE),
                                  [True, True, False, True, True])
    np.testing.assert_array_equal(naive_cleanup_heights(ids, xs), [0, 1, 3, 4])


def _channel_range_batch(w):
    """Zero noise, one lone spike per channel, each channel its own neighbourhood (n_sum = 1):
    spikes on channels 0, 5, 9, 13, hundreds of samples apart, of heights 10^2, 20^2, 15^2, 16^2.
    With the original's `d<5` (cleanup_heights), channels 5 apart do not compete and 4 apart do,
    whatever their times: 9 loses to 5, 13 survives (higher than 9), 0 survives."""
    NT, nchan = 2200, 14
    data = np.zeros((NT, nchan), np.float32)
    for t, c, a in ((200, 0, 10.0), (600, 5, 20.0), (1000, 9, 15.0), (1400, 13, 16.0)):
        data[t:t + w.shape[0], c] = a * w[:, 0]
    return np.asfortranarray(data), np.arange(nchan)[None, :]


def test_height_cleanup_channel_range_is_the_originals_5(rng):
    """Through the public entry, so that the constant our kernel uses is pinned too."""
    w = _templates(rng, 21, 1)
    data, iC = _channel_range_batch(w)
    got = detect_new_spikes(data, templates=w, iC=iC, th=5.0, n_sum=1)
    assert got.channels.tolist() == [0, 5, 13] and got.times.tolist() == [200, 600, 1400]
    _assert_same(got, naive_mex_get_spikes2(data, w, iC, 5.0, 1))


# ------------------------------------------------------------------------------ registry, nvcc
def test_registered_on_both_devices():
    assert registered()["getspikes"] == ("cpu", "cuda")


def test_cuda_shared_memory_limit_checked_before_compiling():
    from pykilosort.kernels.getspikes import _module

    with pytest.raises(ValueError, match="nt0"):
        _module(3000, 6)


@pytest.mark.nvcc
@pytest.mark.parametrize("defines", [(), (("GS_THREADS", 32), ("GS_NT0_MAX", 121), ("GS_NRANK_MAX", 8))])
def test_getspikes_cu_compiles(defines):
    ok, log = nvcc_compile(cuda_source_path("getspikes.cu"), defines=defines)
    assert ok, log


# ------------------------------------------------------------------------------ CUDA vs twin
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=lambda c: "NT%d_C%d_nt%d" % c[:3])
@pytest.mark.parametrize("threads", [256, 32])
def test_cuda_equals_twin(rng, monkeypatch, case, threads):
    """Bit-identical: the kernels use round-to-nearest intrinsics (no FMA contraction) and the
    same summation order; atomic order is sorted away. threads=32: partial blocks everywhere."""
    import cupy

    from pykilosort.kernels import getspikes

    monkeypatch.setattr(getspikes, "_THREADS", threads)
    NT, nchan, nt0, nrank, n_near, n_sum, n_spikes, th = case
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, NT=NT, nchan=nchan, w=w, n_spikes=n_spikes, times=[0, NT - nt0 - 5],
                  chans=[0, nchan - 1])
    iC = _geometric_iC(nchan, n_near)
    cpu = detect_new_spikes(data, templates=w, iC=iC, th=th, n_sum=n_sum)
    gpu = detect_new_spikes(cupy.asarray(data, order="C"), templates=w, iC=iC, th=th, n_sum=n_sum)
    for name, a, b in zip(cpu._fields, gpu, cpu):
        assert isinstance(a, cupy.ndarray), name
        np.testing.assert_array_equal(a.get(), b, err_msg=name)
    assert gpu.snippets.flags.f_contiguous and gpu.cmap.flags.f_contiguous


@pytest.mark.gpu
def test_cuda_height_cleanup_channel_range(rng):
    import cupy

    w = _templates(rng, 21, 1)
    data, iC = _channel_range_batch(w)
    gpu = detect_new_spikes(cupy.asarray(data), templates=w, iC=iC, th=5.0, n_sum=1)
    assert gpu.channels.get().tolist() == [0, 5, 13]
    for name, a, b in zip(gpu._fields, gpu, detect_new_spikes(data, templates=w, iC=iC, th=5.0,
                                                               n_sum=1)):
        np.testing.assert_array_equal(a.get(), b, err_msg=name)


@pytest.mark.gpu
def test_cuda_realistic_batch_and_capacity(rng):
    import cupy

    w = _templates(rng, 61, 6)
    data = _batch(rng, NT=65600, nchan=64, w=w, n_spikes=300)
    iC = _geometric_iC(64, 32)
    cpu = detect_new_spikes(data, templates=w, iC=iC, th=8.0, n_sum=7)
    gpu = detect_new_spikes(cupy.asarray(data), templates=w, iC=iC, th=8.0, n_sum=7)
    assert cpu.times.size > 0
    for name, a, b in zip(cpu._fields, gpu, cpu):
        np.testing.assert_array_equal(a.get(), b, err_msg=name)
    flat = cupy.ones((7000, 3), cupy.float32, order="F")  # as in test_capacity_exceeded_is_reported
    with pytest.raises(SpikeCapacityError, match="raise max_spikes"):
        detect_new_spikes(flat, templates=_templates(rng, 7, 2), iC=_geometric_iC(3, 3), th=0.5, n_sum=3)
