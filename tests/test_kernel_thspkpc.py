"""threshold_spike_pcs (mexThSpkPC): numba twin vs a literal reference, edges, capacity; CUDA vs twin."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import pykilosort.kernels.thspkpc as thspkpc
from pykilosort.errors import KilosortError
from pykilosort.kernels.registry import cuda_source_path, nvcc_compile, registered
from pykilosort.kernels.thspkpc import SpikeCapacityError, covered_samples, threshold_spike_pcs
from pykilosort.neighbours import get_closest_channels


# ------------------------------------------------------------------ the reference, kernel by kernel
def _conv1d_naive(data, W, legacy):
    """Conv1D: the norm of the PC projections of each window, in the mex's 1024-sample chunks
    (taken while a whole chunk fits: `while tid0 < NT - 1024 - nt0 + 1`); zero elsewhere."""
    NT, nchan = data.shape
    nt0, nrank = W.shape
    spans = []
    if legacy:
        tid0 = 0
        while tid0 < NT - 1024 - nt0 + 1:
            spans.append((tid0, tid0 + 1024))
            tid0 += 1024
    elif NT - nt0 + 1 > 0:
        spans.append((0, NT - nt0 + 1))
    conv = np.zeros((NT, nchan), np.float32)
    for lo, hi in spans:
        for c in range(nchan):
            norm2 = np.zeros(hi - lo, np.float32)
            for k in range(nrank):
                y = np.zeros(hi - lo, np.float32)
                for i in range(nt0):  # one float32 rounding per term, in the kernel's order
                    y += W[i, k] * data[lo + i: hi + i, c]
                norm2 += y * y
            conv[lo:hi, c] = np.sqrt(norm2)
    return conv, spans


def _max1d_naive(conv, spans, nt0, th):
    """max1D: max(0, next nt0 values) over the same chunks, kept only above threshold."""
    dmax = np.zeros_like(conv)
    for lo, hi in spans:
        windows = sliding_window_view(conv[lo: hi + nt0 - 1], nt0, axis=0)  # (hi-lo, nchan, nt0)
        y = np.fmax.reduce(windows, axis=2, initial=0.0)  # fmax: NaN never wins, like CUDA max()
        dmax[lo:hi] = np.where(y > th, y, 0).astype(np.float32)
    return dmax


def _max_channels_naive(conv, dmax, iC, nt0, nt0min, th):
    """maxChannels: list of (t, channel) hits in loop order (t, then column c of iC)."""
    NT, nchan = conv.shape
    hits = []
    for t in range(NT - nt0 - nt0min):
        for c in range(nchan):
            cf = float(dmax[t, iC[0, c]])
            if any(dmax[t, iC[j, c]] > cf for j in range(1, iC.shape[0])):
                continue
            if cf > th and float(conv[t + nt0min - 1, iC[0, c]]) > cf - 1e-6:
                hits.append((t, int(iC[0, c])))
    return hits


def _projections_naive(data, W, iC, st, ids, nt0min):
    """computeProjections: feat[k + nrank*j, n] = sum_t data[st+nt0min-1+t, iC[j,id]] W[t,k]."""
    nt0, nrank = W.shape
    nnear = iC.shape[0]
    feat = np.zeros((nrank * nnear, len(st)), np.float32)
    for j in range(nnear):
        chans = iC[j, ids]
        for k in range(nrank):
            x = np.zeros(len(st), np.float32)
            for t in range(nt0):  # vectorised over spikes, sequential over t
                x += data[st + nt0min - 1 + t, chans] * W[t, k]
            feat[k + nrank * j] = x
    return feat


def _naive(data, W, iC, nt0min, th, legacy=True):
    """All four kernels; spikes sorted by (sample, channel). Returns (feat, channels, times)."""
    W = np.asarray(W, np.float32)
    th = np.float32(th)
    conv, spans = _conv1d_naive(data, W, legacy)
    dmax = _max1d_naive(conv, spans, W.shape[0], th)
    hits = sorted(_max_channels_naive(conv, dmax, iC, W.shape[0], nt0min, th))
    st = np.array([h[0] for h in hits], np.int64)
    ids = np.array([h[1] for h in hits], np.int64)
    feat = _projections_naive(data, W, iC, st, ids, nt0min)
    return feat, ids, st + nt0min - 1


# ------------------------------------------------------------------ synthetic batches
def _pcs(rng, nt0, nrank):
    """Orthonormal temporal PCs, trough-like first component."""
    t = np.arange(nt0)
    base = np.column_stack([np.exp(-((t - nt0 / 3) / 3.0) ** 2)] +
                           [rng.standard_normal(nt0) for _ in range(nrank - 1)])
    return np.linalg.qr(base)[0].astype(np.float32)


def _smooth_pcs(nt0, nrank=3):
    """A Gaussian trough and its derivatives, orthonormalised: a shifted copy of the first PC
    projects less and less as the shift grows, so an isolated spike has a single peak."""
    t = np.arange(nt0, dtype=np.float64)
    g = np.exp(-((t - nt0 / 3) / 3.0) ** 2)
    basis = [g]
    for _ in range(nrank - 1):
        basis.append(np.gradient(basis[-1]))
    return np.linalg.qr(np.column_stack(basis))[0].astype(np.float32)


def _batch(rng, NT, nchan, W, n_spikes, amp=12.0):
    """Unit noise plus spikes: random PC mixtures on 1-3 adjacent channels."""
    nt0 = W.shape[0]
    x = rng.standard_normal((NT, nchan)).astype(np.float32)
    for _ in range(n_spikes):
        t = rng.integers(0, NT - nt0 + 1)
        c = rng.integers(0, nchan)
        wave = W @ rng.standard_normal(W.shape[1]) * amp
        for dc, g in ((0, 1.0), (1, 0.6), (-1, 0.5)):
            if 0 <= c + dc < nchan:
                x[t: t + nt0, c + dc] += g * wave
    return np.asfortranarray(x)


def _neighbours(nchan, nnear):
    yc = np.arange(nchan) * 20.0
    xc = np.tile([0.0, 32.0], nchan)[:nchan]
    return get_closest_channels(xc=xc, yc=yc, sigma_mask=30, n_closest=nnear)[0]


def _assert_same(got, ref):
    feat, chans, times = got
    np.testing.assert_array_equal(times, ref[2])
    np.testing.assert_array_equal(chans, ref[1])
    assert feat.shape == ref[0].shape and feat.dtype == np.float32 and feat.flags.f_contiguous
    np.testing.assert_array_equal(feat, ref[0])


def _assert_gpu_same(gpu, ref):
    """The layout is checked on the device array: CuPy's .get() returns a C-ordered copy by
    default, whatever the device layout, so only the values of the host copies are compared."""
    import cupy

    assert all(isinstance(a, cupy.ndarray) for a in gpu)
    feat, chans, times = gpu
    assert feat.flags.f_contiguous and feat.shape == ref[0].shape and feat.dtype == np.float32
    np.testing.assert_array_equal(times.get(), ref[2])
    np.testing.assert_array_equal(chans.get(), ref[1])
    np.testing.assert_array_equal(feat.get(), ref[0])


# (NT, nchan, nnear, nt0, nrank, nt0min): ragged against the 1024 chunks and the twin's tiles
CASES = [(1100, 1, 1, 21, 3, 7), (2100, 3, 3, 21, 3, 7), (2500, 7, 5, 15, 2, 5),
         (3333, 17, 9, 31, 3, 11), (4097, 5, 5, 9, 1, 1), (2000, 4, 4, 12, 4, 12)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "NT%d-ch%d-near%d-nt0%d-r%d-min%d" % c)
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "full"])
@pytest.mark.parametrize("tile", [2048, 97])
def test_twin_equals_naive(rng, monkeypatch, case, legacy, tile):
    NT, nchan, nnear, nt0, nrank, nt0min = case
    monkeypatch.setattr(thspkpc, "_TILE", tile)
    W = _pcs(rng, nt0, nrank)
    data = _batch(rng, NT, nchan, W, n_spikes=NT // 40)
    iC = _neighbours(nchan, nnear)
    ref = _naive(data, W, iC, nt0min, 6.0, legacy)
    assert ref[1].size >= 5  # the case exercises detection
    got = threshold_spike_pcs(data=data, wpca=W, iC=iC, nt0min=nt0min, spk_th=6.0,
                              legacy_coverage=legacy)
    _assert_same(got, ref)
    assert got.channels.dtype == np.int32 and got.times.dtype == np.int64


@pytest.mark.parametrize("nt0,nrank", [(21, 3), (12, 2), (3, 1)])
def test_intermediate_stages_equal_naive(rng, nt0, nrank):
    """The projection norms and window maxima themselves: the outputs reveal their rounding only
    through rare near-ties, and the CUDA kernel is written to round exactly like them."""
    from pykilosort.kernels.thspkpc import _project_norm, _window_max

    NT, nchan, th = 2300, 2, np.float32(3.0)
    W = _pcs(rng, nt0, nrank)
    data = _batch(rng, NT, nchan, W, n_spikes=30)
    conv_ref, spans = _conv1d_naive(data, W, legacy=True)
    dmax_ref = _max1d_naive(conv_ref, spans, nt0, th)
    n_cov = covered_samples(NT=NT, nt0=nt0)
    WT = np.ascontiguousarray(W.T)
    for c in range(nchan):
        for t0, n in [(0, n_cov), (37, 501), (n_cov - 5, 5)]:
            conv = np.zeros(n, np.float32)
            _project_norm(data[:, c], WT, t0, n, conv)
            np.testing.assert_array_equal(conv, conv_ref[t0: t0 + n, c])
        dmax = np.empty(NT - nt0 + 1, np.float32)
        _window_max(conv_ref[:, c], nt0, th, dmax)
        np.testing.assert_array_equal(dmax, dmax_ref[: NT - nt0 + 1, c])


def test_isolated_spikes_found_at_their_sample_up_to_the_batch_edges(rng):
    """A scaled PC on one channel of a silent batch is found with times == its first sample,
    from the first detectable sample (nt0min-1) to the last (NT-nt0-2), on the first and last
    channel; one sample outside either end is not."""
    NT, nchan, nt0, nt0min = 1500, 6, 21, 7
    W = _smooth_pcs(nt0)
    iC = _neighbours(nchan, 3)
    placed = {(nt0min - 1, 0), (NT - nt0 - 2, nchan - 1), (700, 2)}
    outside = {(nt0min - 2, 3), (NT - nt0 - 1, 4)}
    data = np.zeros((NT, nchan), np.float32, order="F")
    for p, c in placed | outside:
        data[p: p + nt0, c] = 20 * W[:, 0]
    got = threshold_spike_pcs(data=data, wpca=W, iC=iC, nt0min=nt0min, spk_th=8.0,
                              legacy_coverage=False)
    assert set(zip(got.times.tolist(), got.channels.tolist())) == placed
    _assert_same(got, _naive(data, W, iC, nt0min, 8.0, legacy=False))
    # the isolated snippet is the first PC: features (20, 0, 0) on the centre channel
    first = np.flatnonzero(got.times == 700)[0]
    np.testing.assert_allclose(got.features[:3, first], [20, 0, 0], atol=1e-4)


def test_legacy_coverage_misses_the_batch_tail(rng):
    """The original projects whole 1024-sample chunks only: a spike past them is not found."""
    assert covered_samples(NT=65600, nt0=61) == 65536
    assert covered_samples(NT=65472, nt0=61) == 64512  # v2.0.2's NT: a 30 ms blind tail
    assert covered_samples(NT=65472, nt0=61, legacy=False) == 65412
    assert covered_samples(NT=1000, nt0=61) == 0
    NT, nchan, nt0, nt0min = 2100, 2, 21, 7  # covered: 2048; detectable up to st 2071
    assert covered_samples(NT=NT, nt0=nt0) == 2048
    W = _smooth_pcs(nt0)
    data = np.zeros((NT, nchan), np.float32, order="F")
    data[2070: 2070 + nt0, 1] = 20 * W[:, 0]  # wholly past the covered 2048 samples
    data[1000: 1000 + nt0, 0] = 20 * W[:, 0]
    iC = _neighbours(nchan, 2)
    legacy = threshold_spike_pcs(data=data, wpca=W, iC=iC, nt0min=nt0min, spk_th=8.0)
    full = threshold_spike_pcs(data=data, wpca=W, iC=iC, nt0min=nt0min, spk_th=8.0,
                               legacy_coverage=False)
    assert legacy.times.tolist() == [1000] and full.times.tolist() == [1000, 2070]


def test_ties_nan_and_channels_standing_for_others(rng):
    """Equal neighbours both fire (only a strictly larger one suppresses); NaN windows never
    win; a column whose first neighbour is another channel reports that channel."""
    NT, nchan, nt0, nt0min = 1800, 6, 15, 5
    W = _pcs(rng, nt0, 2)
    data = _batch(rng, NT, nchan, W, n_spikes=60)
    data[:, 3] = data[:, 2]  # identical neighbours
    data[400:405, 5] = np.nan
    iC = _neighbours(nchan, 3)
    iC[0, 4] = 1  # column 4 stands for channel 1 (as when two sites share a position)
    got = threshold_spike_pcs(data=data, wpca=W, iC=iC, nt0min=nt0min, spk_th=6.0,
                              legacy_coverage=False)
    _assert_same(got, _naive(data, W, iC, nt0min, 6.0, legacy=False))
    both = set(got.times[got.channels == 2].tolist()) & set(got.times[got.channels == 3].tolist())
    assert both  # the tie did not suppress either copy
    keys = got.times * nchan + got.channels
    assert np.all(np.diff(keys) >= 0)  # sorted by time, then channel


def test_capacity_is_reported_not_truncated(rng):
    NT, nchan, nt0 = 2000, 4, 15
    W = _pcs(rng, nt0, 3)
    data = _batch(rng, NT, nchan, W, n_spikes=80)
    iC = _neighbours(nchan, 3)
    args = dict(data=data, wpca=W, iC=iC, nt0min=5, spk_th=6.0)
    n = threshold_spike_pcs(**args).times.size
    assert n > 10
    assert threshold_spike_pcs(**args, max_spikes=n).times.size == n  # exactly at capacity
    with pytest.raises(SpikeCapacityError, match=f"found {n} spikes.*max_spikes={n - 1}"):
        threshold_spike_pcs(**args, max_spikes=n - 1)
    assert issubclass(SpikeCapacityError, KilosortError)


@pytest.mark.parametrize("NT", [0, 1, 15, 19, 20])
def test_empty_batches(rng, NT):
    """Batches too short for any detection (NT <= nt0 + nt0min) or silent ones give no spikes."""
    W = _pcs(rng, 15, 3)
    iC = _neighbours(3, 2)
    data = (rng.standard_normal((NT, 3)) * 50).astype(np.float32)
    got = threshold_spike_pcs(data=data, wpca=W, iC=iC, nt0min=5, spk_th=6.0,
                              legacy_coverage=False, max_spikes=0)
    assert got.features.shape == (6, 0) and got.channels.shape == (0,) and got.times.shape == (0,)
    silent = threshold_spike_pcs(data=np.zeros((3000, 3), np.float32), wpca=W, iC=iC, nt0min=5,
                                 spk_th=6.0)
    assert silent.times.size == 0


def test_deterministic_and_layout_independent(rng, monkeypatch):
    W = _pcs(rng, 21, 3)
    data = _batch(rng, 3000, 8, W, n_spikes=100)
    iC = _neighbours(8, 5)
    args = dict(wpca=W, iC=iC, nt0min=7, spk_th=6.0)
    first = threshold_spike_pcs(data=data, **args)
    monkeypatch.setattr(thspkpc, "_TILE", 13)
    for again in (threshold_spike_pcs(data=data, **args),
                  threshold_spike_pcs(data=np.ascontiguousarray(data), **args)):
        _assert_same(again, first)


def test_bad_inputs(rng):
    W = _pcs(rng, 15, 3)
    data = np.zeros((500, 4), np.float32)
    iC = _neighbours(4, 3)
    ok = dict(data=data, wpca=W, iC=iC, nt0min=5, spk_th=6.0)
    with pytest.raises(ValueError, match="0-based"):
        threshold_spike_pcs(**{**ok, "iC": iC + 1})  # MATLAB's 1-based iC
    with pytest.raises(ValueError, match=r"\(nnear, Nchan=4\)"):
        threshold_spike_pcs(**{**ok, "iC": iC[:, :3]})
    with pytest.raises(TypeError, match="float32"):
        threshold_spike_pcs(**{**ok, "data": data.astype(np.float64)})
    with pytest.raises(ValueError, match="nt0min"):
        threshold_spike_pcs(**{**ok, "nt0min": 0})
    with pytest.raises(ValueError, match="nt0min"):
        threshold_spike_pcs(**{**ok, "nt0min": 16})
    with pytest.raises(ValueError, match="max_spikes"):
        threshold_spike_pcs(**ok, max_spikes=-1)


def test_registered_on_both_devices():
    assert registered()["threshold_spike_pcs"] == ("cpu", "cuda")


@pytest.mark.nvcc
@pytest.mark.parametrize("defines", [(), (("THSPKPC_THREADS", 128), ("THSPKPC_NT0_MAX", 121),
                                          ("THSPKPC_NRANK_MAX", 6))])
def test_cuda_source_compiles(defines):
    ok, log = nvcc_compile(cuda_source_path("thspkpc.cu"), defines=defines)
    assert ok, log


# ------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES + [(65600, 32, 17, 61, 3, 20)],
                         ids=lambda c: "NT%d-ch%d-near%d-nt0%d-r%d-min%d" % c)
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "full"])
def test_cuda_equals_twin(rng, case, legacy):
    """Explicitly rounded sums on both sides (no FMA): identical spikes and features."""
    import cupy

    NT, nchan, nnear, nt0, nrank, nt0min = case
    W = _pcs(rng, nt0, nrank)
    data = _batch(rng, NT, nchan, W, n_spikes=NT // 40)
    iC = _neighbours(nchan, nnear)
    args = dict(wpca=W, iC=iC, nt0min=nt0min, spk_th=6.0, legacy_coverage=legacy)
    cpu = threshold_spike_pcs(data=data, **args)
    _assert_gpu_same(threshold_spike_pcs(data=cupy.asarray(data), **args), cpu)


@pytest.mark.gpu
def test_cuda_ties_nan_capacity_and_long_templates(rng):
    import cupy

    W = _pcs(rng, 95, 5)  # above the default shared-memory capacities (81 samples, 3 PCs)
    data = _batch(rng, 5000, 6, W, n_spikes=150)
    data[:, 3] = data[:, 2]
    data[400:405, 5] = np.nan
    iC = _neighbours(6, 4)
    iC[0, 4] = 1
    args = dict(wpca=W, iC=iC, nt0min=30, spk_th=6.0)
    cpu = threshold_spike_pcs(data=data, **args)
    _assert_gpu_same(threshold_spike_pcs(data=cupy.asarray(data), **args), cpu)
    n = cpu.times.size
    with pytest.raises(SpikeCapacityError, match="max_spikes"):
        threshold_spike_pcs(data=cupy.asarray(data), **args, max_spikes=n - 1)
    empty = threshold_spike_pcs(data=cupy.zeros((40, 6), cupy.float32), **args)
    assert empty.features.shape == (20, 0) and empty.times.size == 0
