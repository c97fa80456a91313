"""spikedetector (spikedetector3): numba twin vs a literal emulation of the original; CUDA vs twin."""
import numpy as np
import pytest

from template_problems import generic_temporal_templates

import naive_spikedetector as naive
from pykilosort.kernels.registry import cuda_source_path, nvcc_compile, registered
from pykilosort.kernels.spikedetector import (NSIZES, ORIGINAL_MAX_SPIKES, DetectorCoverage,
                                              GenericSpikes, detect_generic_spikes,
                                              detector_coverage, footprint_weights)

NTHREADS = 1024
SIG = 10.0


# ------------------------------------------------------------------------------ synthetic data
_templates = generic_temporal_templates


def _closest(points, sites, n):
    """getClosestChannels2: the n nearest sites of each point (n, npoints) and their distances."""
    d = np.sqrt(((sites[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    order = np.argsort(d, axis=0, kind="stable")[:n]
    return order.astype(np.int32), np.take_along_axis(d, order, axis=0).astype(np.float32)


class Geometry:
    """Channels on 2 staggered columns 120 um apart (rows 20 um apart, odd rows shifted 16 um in
    x, as Neuropixels); centres on a grid twice as fine in y and 17 um in x, kept within 30 um of
    a channel (datashift2, standalone_detector); some pairs farther than 100 um. v2 as
    standalone_detector. (Unstaggered columns would make the footprints of centres shifted
    across a column exactly proportional: ties that rounding alone decides.)"""

    def __init__(self, nchan, n_near, n_near_up, sig=SIG):
        row = np.arange(nchan) // 2
        self.xy = np.stack([np.tile([0.0, 120.0], nchan)[:nchan] + 16.0 * (row % 2), row * 20.0], 1)
        ys = np.arange(0, self.xy[:, 1].max() + 1, 10.0)
        grid = np.array([(x, y) for y in ys for x in np.linspace(0, 136, 9)])
        near = np.sqrt(((grid[:, None] - self.xy[None]) ** 2).sum(-1)).min(1) < 30
        self.centres = grid[near]
        self.iC, self.dist = _closest(self.centres, self.xy, n_near)
        self.iC2, self.dist2 = _closest(self.centres, self.centres, n_near_up)
        k = np.arange(1, NSIZES + 1)[:, None, None]
        self.v2 = np.exp(-2 * self.dist[None].astype(np.float64) ** 2 / (sig * k) ** 2).sum(1).astype(np.float32)
        self.n_up = self.centres.shape[0]

    def args(self):
        return dict(iC=self.iC, dist=self.dist, v2=self.v2, iC2=self.iC2, dist2=self.dist2)

    def plant(self, data, w, *, t, u, amp, r=0, k=0):
        """Add u's own template (footprint size k times w[:, r], at t) on u's channels, scaled so
        that its score at (t, u) is amp^2 (the footprint of size k has norm sqrt(v2[k, u]))."""
        sA = footprint_weights(self.dist, SIG)[k, :, u]
        gain = amp / np.linalg.norm(sA.astype(np.float64))
        for j, c in enumerate(self.iC[:, u]):
            data[t:t + w.shape[0], c] += np.float32(gain * sA[j]) * w[:, r]


def _batch(rng, geo, w, NT, *, n_spikes, noise=1.0, amp=(20, 60)):
    data = noise * rng.standard_normal((NT, geo.xy.shape[0])).astype(np.float32)
    for _ in range(n_spikes):
        geo.plant(data, w, t=rng.integers(0, NT - w.shape[0]), u=rng.integers(geo.n_up),
                  amp=rng.uniform(*amp), r=rng.integers(w.shape[1]), k=rng.integers(NSIZES))
    return np.asfortranarray(data)


def _detect(data, w, geo, *, nt0min, spk_th=8.0, **kw):
    return detect_generic_spikes(data, templates=w, nt0min=nt0min, spk_th=spk_th, sig=SIG,
                                 **geo.args(), **kw)


def _assert_equals_reference(got, ref):
    np.testing.assert_array_equal(got.dout, ref["dout"])
    np.testing.assert_array_equal(got.kkmax, ref["kkmax"])
    st = ref["st"]
    order = np.lexsort((st[1], st[0]))  # the emulation's atomic order -> (time, centre)
    np.testing.assert_array_equal(got.times, st[0, order])
    np.testing.assert_array_equal(got.centres, st[1, order])
    np.testing.assert_array_equal(got.amplitudes, st[2, order])
    np.testing.assert_array_equal(got.kk, st[3, order])
    np.testing.assert_array_equal(got.features, ref["cF"][:, order])
    assert got.n_found == ref["counter"]
    assert got.dout.flags.f_contiguous and got.kkmax.flags.f_contiguous
    assert got.features.flags.f_contiguous
    assert got.dout.dtype == np.float32 and got.kkmax.dtype == np.int32
    for a in (got.times, got.centres, got.amplitudes, got.kk):
        assert a.dtype == np.int64


# (NT, Nchan, nt0, Nrank, NchanNear, NchanNearUp, nt0min, spikes): NT = 2*1024 + 64 + 300 has a
# partial tile and a tail past n_conv; 2*nt0min = nt0 + 1 (the widest window); NT % 1024 < nt0;
# few neighbours; Nrank 1
CASES = [
    (2 * 1024 + 64 + 300, 8, 61, 6, 6, 26, 20, 14),
    (2 * 1024 + 64 + 300, 6, 21, 3, 4, 16, 11, 20),
    (3 * 1024 + 5, 10, 15, 2, 10, 30, 3, 25),
    (1100, 4, 9, 1, 2, 12, 5, 6),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "NT%d_C%d_nt%d" % c[:3])
def test_twin_equals_literal_reference(rng, case):
    NT, nchan, nt0, nrank, n_near, n_near_up, nt0min, n_spikes = case
    geo = Geometry(nchan, n_near, n_near_up)
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, geo, w, NT, n_spikes=n_spikes)
    ref = naive.spikedetector3(data, w, geo.iC, geo.dist, geo.v2, geo.iC2, geo.dist2,
                               nt0min=nt0min, spk_th=8.0, sig=SIG)
    got = _detect(data, w, geo, nt0min=nt0min)
    assert ref["counter"] >= 2  # the case exercises detection
    assert (geo.dist2[1:] >= 100).any() and (geo.dist2[1:] < 100).any()  # both branches
    assert got.kkmax.max() > nrank or nrank * NSIZES == 1  # sizes k > 0 win somewhere
    _assert_equals_reference(got, ref)


def test_reference_stages_agree_with_the_semantics(rng):
    """The emulation's intermediate arrays against one-line definitions (guards the reference)."""
    NT, nt0, nt0min = 2412, 21, 8
    geo = Geometry(6, 4, 8)
    w = _templates(rng, nt0, 3)
    data = _batch(rng, geo, w, NT, n_spikes=10)
    ref = naive.spikedetector3(data, w, geo.iC, geo.dist, geo.v2, geo.iC2, geo.dist2,
                               nt0min=nt0min, spk_th=8.0, sig=SIG)
    cov = detector_coverage(NT, nt0, nt0min)
    t = 777
    expect = np.float32(0)
    for i in range(nt0):
        expect = np.float32(expect + w[i, 2] * data[t + i, 3])
    assert ref["dfilt"][t, 3, 2] == expect
    assert not ref["dfilt"][cov.n_conv:].any() and ref["dfilt"][cov.n_conv - 1].all()
    window = ref["dout"][t - nt0min:t + nt0min]
    ref_max = np.where(window.max(0) > 64, window.max(0), 0)
    np.testing.assert_array_equal(ref["dmax"][t], ref_max)


def test_planted_spikes_found_at_their_time_and_centre(rng):
    """Zero noise: each planted template (u's own footprint, size k, rank r) is found at its
    start sample and centre, with kk = r + k*Nrank, the features of its footprint and amplitude
    amp (its score is amp^2 by Cauchy-Schwarz, the best any centre, size, rank or lag can do)."""
    NT, nt0, nt0min = 2412, 61, 20
    geo = Geometry(8, 6, 12)
    w = _templates(rng, nt0, 6)
    w[:, 1:] = np.linalg.qr(w)[0][:, 1:].astype(np.float32)  # other ranks orthogonal to rank 0
    data = np.zeros((NT, 8), np.float32)
    planted = [(100, 4, 30.5, 0, 1), (600, 10, 50.5, 0, 0), (1300, 7, 25.5, 0, 3),
               (1900, 12, 40.5, 0, 2)]
    for t, u, amp, r, k in planted:
        geo.plant(data, w, t=t, u=u, amp=amp, r=r, k=k)
    got = _detect(np.asfortranarray(data), w, geo, nt0min=nt0min)
    found = set(zip(got.times.tolist(), got.centres.tolist()))
    sA = footprint_weights(geo.dist, SIG)
    for t, u, amp, r, k in planted:
        assert (t, u) in found, (t, u, sorted(found))
        s = list(zip(got.times, got.centres)).index((t, u))
        assert got.kk[s] == r + k * 6
        footprint = amp * sA[k, :, u] / np.linalg.norm(sA[k, :, u])
        np.testing.assert_allclose(got.features[:, s], footprint, rtol=1e-4, atol=1e-4)
        assert got.amplitudes[s] in (int(amp) - 1, int(amp))  # truncated sqrt of ~amp^2
    for t, u in found:  # nothing away from the planted spikes
        assert min(abs(t - p[0]) for p in planted) < nt0


# ------------------------------------------------------------------------------ coverage quirks
def _loops_coverage(NT, nt0, nt0min):
    """The sample sets each stage covers, from the original's loop bounds run literally."""
    conv = set()
    tid0 = 0
    while tid0 < NT - NTHREADS - nt0 + 1:
        conv.update(range(tid0, tid0 + NTHREADS))
        tid0 += NTHREADS
    nblocks = NT // NTHREADS
    score, peak = set(), set()
    for bid in range(nblocks):
        for first in range(bid * NTHREADS, NT, NTHREADS * nblocks):
            score.update(range(first, min(first + NTHREADS, NT)))
            peak.update(range(first, min(first + NTHREADS, max(0, NT - nt0 - nt0min))))
    return conv, score, peak


@pytest.mark.parametrize("nt0,nt0min", [(21, 8), (61, 20), (61, 31), (5, 1)])
def test_window_max_equals_the_literal_max1d(rng, nt0, nt0min):
    """Stage 3 alone, against the emulation's max1D: above-threshold runs of every length, at
    the first and last covered samples, touching and overlapping windows."""
    import pykilosort.kernels.spikedetector as sd

    NT, n_up, th = 2 * 1024 + nt0 + 37, 7, 8.0
    dout = (rng.random((NT, n_up)) * 70).astype(np.float32)  # 1 in 11 above th^2 = 64
    dout[:, 0] = 0
    dout[:, 1] = 80  # all above
    dout[[0, NT - 1], 2] = 100
    dout[rng.random((NT, n_up)) < 0.5] = 0
    cov = detector_coverage(NT, nt0, nt0min)
    got = sd._window_max(np.asfortranarray(dout), nt0min, cov.n_conv, np.float32(th) ** 2)
    np.testing.assert_array_equal(got, naive.max1d(dout, nt0, nt0min, th))
    assert got[:, 3:].any()


@pytest.mark.parametrize("nt0,nt0min", [(1, 0), (1, 1), (7, 3), (61, 20), (81, 41)])
def test_detector_coverage_equals_the_original_loops(nt0, nt0min):
    for NT in list(range(nt0, 3400, 53)) + [1023, 1024, 1024 + nt0 - 1, 1024 + nt0, 2048 + nt0,
                                            65600, 65472]:
        if NT < nt0:
            continue
        cov = detector_coverage(NT, nt0, nt0min)
        conv, score, peak = _loops_coverage(NT, nt0, nt0min)
        assert set(range(cov.n_conv)) == conv, NT
        assert set(range(cov.n_score)) == score, NT
        assert set(range(cov.n_peak)) == peak, NT
    assert detector_coverage(65600, 61, 20) == DetectorCoverage(65536, 65600, 65519)
    assert detector_coverage(1000, 61, 20) == DetectorCoverage(0, 0, 0)


def test_nothing_scored_past_n_conv(rng):
    """A spike past n_conv is never filtered: dout is 0 there and it is not found, while the
    same spike one tile earlier is."""
    NT, nt0, nt0min = 2412, 61, 20
    geo = Geometry(8, 6, 12)
    w = _templates(rng, nt0, 2)
    cov = detector_coverage(NT, nt0, nt0min)
    assert cov.n_conv == 2048 and cov.n_peak == NT - nt0 - nt0min
    data = np.zeros((NT, 8), np.float32)
    late = cov.n_conv + 100  # < n_peak: the search would look there
    geo.plant(data, w, t=late, u=7, amp=80.0, k=2)
    geo.plant(data, w, t=late - NTHREADS, u=7, amp=80.0, k=2)
    got = _detect(np.asfortranarray(data), w, geo, nt0min=nt0min)
    assert not got.dout[cov.n_conv:].any() and not got.kkmax[cov.n_conv:].any()
    assert got.dout[:cov.n_conv].any()
    assert (late - NTHREADS, 7) in set(zip(got.times.tolist(), got.centres.tolist()))
    assert got.times.max() < cov.n_conv


@pytest.mark.parametrize("NT", [200, 1023, 1024, 1024 + 60])
def test_short_batches_find_nothing(rng, NT):
    """NT < 1024: no block launched; NT < 1024 + nt0: no filter tile. dout stays 0."""
    geo = Geometry(6, 4, 8)
    w = _templates(rng, 61, 2)
    data = np.zeros((NT, 6), np.float32)
    geo.plant(data, w, t=70, u=5, amp=500.0)
    got = _detect(np.asfortranarray(data), w, geo, nt0min=20)
    assert got.dout.shape == (NT, geo.n_up) and not got.dout.any() and not got.kkmax.any()
    assert got.times.shape == (0,) and got.features.shape == (4, 0) and got.n_found == 0
    ref = naive.spikedetector3(data, w, geo.iC, geo.dist, geo.v2, geo.iC2, geo.dist2,
                               nt0min=20, spk_th=8.0, sig=SIG)
    _assert_equals_reference(got, ref)


# ------------------------------------------------------------------------------ cap
def test_max_spikes_keeps_the_first_in_time_then_centre_order(rng):
    geo = Geometry(8, 6, 9)
    w = _templates(rng, 21, 3)
    data = _batch(rng, geo, w, 3100, n_spikes=40)
    every = _detect(data, w, geo, nt0min=10)
    n = every.times.size
    assert n > 10 and every.n_found == n
    key = every.times * geo.n_up + every.centres
    assert np.all(np.diff(key) > 0)  # sorted by (time, centre), no duplicates
    for cap in (0, 1, 7, n, n + 5):
        got = _detect(data, w, geo, nt0min=10, max_spikes=cap)
        assert got.n_found == n
        m = min(cap, n)
        for name in ("times", "centres", "amplitudes", "kk"):
            np.testing.assert_array_equal(getattr(got, name), getattr(every, name)[:m])
        np.testing.assert_array_equal(got.features, every.features[:, :m])
        np.testing.assert_array_equal(got.dout, every.dout)
    assert ORIGINAL_MAX_SPIKES == naive.MAXFR == 10000


def test_no_cap_by_default_beyond_the_originals_maxfr():
    """A constant batch: every sample of a plateau is its own window's peak, far more than
    maxFR = 10000 spikes; the original keeps an arbitrary 10000, ours all of them."""
    geo = Geometry(4, 2, 3)
    w = np.ones((3, 1), np.float32)
    data = np.ones((8 * 1024, 4), np.float32, order="F")
    got = _detect(data, w, geo, nt0min=1, spk_th=0.5)
    cov = detector_coverage(8 * 1024, 3, 1)
    assert got.n_found == got.times.size > ORIGINAL_MAX_SPIKES
    # dmax[t + nt0min] for t < n_conv, but dout is 0 from n_conv on: not its window's peak
    assert got.times.min() == 1 and got.times.max() == cov.n_conv - 1
    capped = _detect(data, w, geo, nt0min=1, spk_th=0.5, max_spikes=ORIGINAL_MAX_SPIKES)
    assert capped.n_found == got.n_found and capped.times.size == ORIGINAL_MAX_SPIKES


# ------------------------------------------------------------------------------ interface
def test_c_order_and_other_dtypes_of_the_small_arguments(rng):
    geo = Geometry(8, 6, 9)
    w = _templates(rng, 21, 3)
    data = _batch(rng, geo, w, 2412, n_spikes=10)
    ref = _detect(data, w, geo, nt0min=10)
    got = detect_generic_spikes(np.ascontiguousarray(data), templates=w.astype(np.float64),
                                iC=geo.iC.astype(np.int64, order="C"), dist=geo.dist.astype(np.float64),
                                v2=geo.v2, iC2=geo.iC2.astype(np.int16), dist2=geo.dist2,
                                nt0min=np.int64(10), spk_th=np.float64(8.0), sig=10)
    assert isinstance(got, GenericSpikes) and got.times.size > 0
    for name, a, b in zip(ref._fields, got, ref):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_footprint_weights_and_threshold_rounding():
    dist = np.array([[0.0, 7.3], [12.5, 30.1]], np.float32)
    sA = footprint_weights(dist, SIG)
    assert sA.shape == (NSIZES, 2, 2) and sA.dtype == np.float32 and sA.flags.f_contiguous
    for u in range(2):
        np.testing.assert_array_equal(sA[:, :, u].T.ravel(), naive.footprints(dist[:, u], SIG))
    np.testing.assert_allclose(sA[2, 1, 0], np.exp(-12.5 ** 2 / 900), rtol=1e-7)


def test_bad_inputs(rng):
    geo = Geometry(6, 4, 8)
    w = _templates(rng, 21, 2)
    x = np.zeros((2100, 6), np.float32)
    ok = dict(templates=w, nt0min=10, spk_th=8.0, sig=SIG, **geo.args())

    def bad(exc, match, data=x, **change):
        with pytest.raises(exc, match=match):
            detect_generic_spikes(data, **{**ok, **change})

    bad(TypeError, "float32", data=x.astype(np.float64))
    bad(ValueError, "2-D", data=x[:, 0])
    bad(ValueError, "empty", data=x[:, :0])
    bad(ValueError, "nt0=21 .*NT=20", data=x[:20])
    bad(TypeError, "integer channel", iC=geo.iC.astype(np.float32))
    bad(ValueError, r"0-based channel indices in \[0, 6\)", iC=geo.iC + 6)
    bad(ValueError, r"0-based centre indices", iC2=geo.iC2 - 1)
    bad(ValueError, "one column per centre", iC2=geo.iC2[:, :-1])
    bad(ValueError, r"dist must have shape \(4, ", dist=geo.dist[:3])
    bad(ValueError, r"v2 must have shape \(5, ", v2=geo.v2[:4])
    bad(ValueError, r"dist2 must have shape", dist2=geo.dist2[:, :3])
    bad(ValueError, "nt0min", nt0min=12)   # 2*12 > 21 + 1
    bad(ValueError, "nt0min", nt0min=-1)
    bad(ValueError, "spk_th", spk_th=float("nan"))
    bad(ValueError, "sig", sig=0.0)
    bad(ValueError, "max_spikes", max_spikes=-1)
    bad(ValueError, "max_spikes", max_spikes=2.5)
    bad(ValueError, "non-empty 2-D", templates=w[:, 0])


# ------------------------------------------------------------------------------ keep_scores=False
def _spike_fields(res):
    return (res.times, res.centres, res.amplitudes, res.kk, res.features, res.n_found)


def _assert_same_spikes(pruned, full):
    assert pruned.dout is None and pruned.kkmax is None
    for a, b in zip(_spike_fields(pruned), _spike_fields(full)):
        np.testing.assert_array_equal(a, b)


# (spk_th, noise): the default; a threshold near the noise, where little can be skipped; loud noise
@pytest.mark.parametrize("spk_th,noise", [(8.0, 1.0), (4.0, 1.0), (8.0, 3.0), (1e-3, 1.0)])
@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "NT%d_C%d_nt%d" % c[:3])
def test_pruned_scores_give_the_same_spikes(rng, case, spk_th, noise):
    NT, nchan, nt0, nrank, n_near, n_near_up, nt0min, n_spikes = case
    geo = Geometry(nchan, n_near, n_near_up)
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, geo, w, NT, n_spikes=n_spikes, noise=noise)
    full = _detect(data, w, geo, nt0min=nt0min, spk_th=spk_th)
    assert full.n_found >= 2
    _assert_same_spikes(_detect(data, w, geo, nt0min=nt0min, spk_th=spk_th, keep_scores=False), full)


def _pruned_scores(data, w, geo, *, nt0min, spk_th, v2=None):
    """dout of the CPU twin with pruning, and the cut it used (dout is hidden by the API)."""
    import pykilosort.kernels.spikedetector as sd

    v2 = geo.v2 if v2 is None else v2
    sA = footprint_weights(geo.dist, SIG)
    th2 = np.float32(spk_th) ** 2
    pruning = sd._pruning(sA, v2, th2, keep_scores=False)
    cov = detector_coverage(data.shape[0], w.shape[0], nt0min)
    res = sd._detect_cpu(data, np.asfortranarray(w), geo.iC, sA, v2, geo.iC2, geo.dist2, nt0min,
                         th2, None, cov, pruning)
    return res.dout, pruning[1]


def test_pruning_skips_only_scores_below_the_cut(rng):
    """Where a full score reaches the cut the pruned one equals it; elsewhere it is lower or 0,
    and most of a noisy batch is skipped (else the pruning does nothing)."""
    NT, nchan, nt0, nrank, n_near, n_near_up, nt0min, n_spikes = CASES[0]
    geo = Geometry(nchan, n_near, n_near_up)
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, geo, w, NT, n_spikes=n_spikes)
    full = _detect(data, w, geo, nt0min=nt0min).dout
    pruned, cut = _pruned_scores(data, w, geo, nt0min=nt0min, spk_th=8.0)
    high = full >= cut
    assert high.sum() > 20
    np.testing.assert_array_equal(pruned[high], full[high])
    assert (pruned <= full).all()
    assert np.count_nonzero(pruned) < 0.5 * np.count_nonzero(full)  # 27% here


def test_pruning_follows_the_v2_it_is_given(rng):
    """v2 is an argument: footprints whose v2 is 16x smaller score 16x higher, and the proof
    must account for it (with a bound that assumed the original's v2, spikes would be lost)."""
    NT, nchan, nt0, nrank, n_near, n_near_up, nt0min, _ = CASES[0]
    geo = Geometry(nchan, n_near, n_near_up)
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, geo, w, NT, n_spikes=0, noise=1.0)  # noise alone: no spike at v2
    v2 = geo.v2.copy()
    v2[:, ::2] /= 16
    geo.v2 = v2
    full = _detect(data, w, geo, nt0min=nt0min, spk_th=8.0)
    assert full.n_found >= 5 and np.all(full.centres % 2 == 0)  # only the boosted centres
    _assert_same_spikes(_detect(data, w, geo, nt0min=nt0min, spk_th=8.0, keep_scores=False), full)


def test_pruning_with_nan_and_inf_samples(rng):
    """Non-finite samples make no bound (their pieces are kept); the spikes are unchanged."""
    NT, nchan, nt0, nrank, n_near, n_near_up, nt0min, n_spikes = CASES[2]
    geo = Geometry(nchan, n_near, n_near_up)
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, geo, w, NT, n_spikes=n_spikes)
    data[1500:1510, 3] = np.nan
    data[2500, 5] = np.inf
    full = _detect(data, w, geo, nt0min=nt0min)
    pruned, cut = _pruned_scores(data, w, geo, nt0min=nt0min, spk_th=8.0)
    assert full.n_found >= 2
    np.testing.assert_array_equal(pruned[full.dout >= cut], full.dout[full.dout >= cut])
    _assert_same_spikes(_detect(data, w, geo, nt0min=nt0min, keep_scores=False), full)


def test_registered_on_both_devices():
    assert registered()["spikedetector"] == ("cpu", "cuda")


@pytest.mark.nvcc
def test_spikedetector3_cu_compiles():
    ok, log = nvcc_compile(cuda_source_path("spikedetector3.cu"))
    assert ok, log


# ------------------------------------------------------------------------------ CUDA vs twin
def _assert_same_on_device(gpu, cpu):
    import cupy

    for name, a, b in zip(cpu._fields, gpu, cpu):
        if name == "n_found":
            assert a == b
            continue
        assert isinstance(a, cupy.ndarray), name
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a.get(), b, err_msg=name)
    assert gpu.dout.flags.f_contiguous and gpu.kkmax.flags.f_contiguous
    assert gpu.features.flags.f_contiguous


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "NT%d_C%d_nt%d" % c[:3])
@pytest.mark.parametrize("threads,capacity", [(256, ORIGINAL_MAX_SPIKES), (32, 3)])
def test_cuda_equals_twin(rng, monkeypatch, case, threads, capacity):
    """Bit-identical: no FMA contraction, the same orders of summation; atomic order sorted away.
    threads=32: partial blocks; capacity 3: the spike search runs again with a larger buffer."""
    import cupy

    from pykilosort.kernels import spikedetector

    monkeypatch.setattr(spikedetector, "_THREADS", threads)
    monkeypatch.setattr(spikedetector, "_INITIAL_CAPACITY", capacity)
    NT, nchan, nt0, nrank, n_near, n_near_up, nt0min, n_spikes = case
    geo = Geometry(nchan, n_near, n_near_up)
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, geo, w, NT, n_spikes=n_spikes)
    cpu = _detect(data, w, geo, nt0min=nt0min)
    assert cpu.times.size > capacity or capacity > 3
    for order in ("F", "C"):
        gpu = _detect(cupy.asarray(data, order=order), w, geo, nt0min=nt0min)
        _assert_same_on_device(gpu, cpu)
    gpu = _detect(cupy.asarray(data), w, geo, nt0min=nt0min, max_spikes=4)
    _assert_same_on_device(gpu, _detect(data, w, geo, nt0min=nt0min, max_spikes=4))
    assert gpu.n_found == cpu.times.size > 4


@pytest.mark.gpu
@pytest.mark.parametrize("NT", [1023, 1030])
def test_cuda_short_batches(rng, NT):
    import cupy

    geo = Geometry(6, 4, 8)
    w = _templates(rng, 21, 2)
    data = np.zeros((NT, 6), np.float32, order="F")
    geo.plant(data, w, t=70, u=5, amp=500.0)
    gpu = _detect(cupy.asarray(data), w, geo, nt0min=10)
    _assert_same_on_device(gpu, _detect(data, w, geo, nt0min=10))
    assert gpu.n_found == 0


@pytest.mark.gpu
def test_cuda_planted_spike_and_device_arguments(rng):
    """Device arrays for every argument; the spike of test_planted_spikes... found on the GPU."""
    import cupy

    geo = Geometry(8, 6, 12)
    w = _templates(rng, 61, 6)
    data = np.zeros((2412, 8), np.float32, order="F")
    geo.plant(data, w, t=600, u=10, amp=50.0)
    args = {k: cupy.asarray(v) for k, v in geo.args().items()}
    gpu = detect_generic_spikes(cupy.asarray(data), templates=cupy.asarray(w), nt0min=20,
                                spk_th=8.0, sig=SIG, **args)
    assert (600, 10) in set(zip(gpu.times.get().tolist(), gpu.centres.get().tolist()))
    _assert_same_on_device(gpu, _detect(data, w, geo, nt0min=20))


@pytest.mark.gpu
def test_cuda_spikes_only_equal_the_pruned_twin(rng):
    """keep_scores=False on the GPU (every score computed there): no dout / kkmax, and the
    spikes of the CPU twin's pruned run."""
    import cupy

    NT, nchan, nt0, nrank, n_near, n_near_up, nt0min, n_spikes = CASES[0]
    geo = Geometry(nchan, n_near, n_near_up)
    w = _templates(rng, nt0, nrank)
    data = _batch(rng, geo, w, NT, n_spikes=n_spikes)
    gpu = detect_generic_spikes(cupy.asarray(data), templates=w, nt0min=nt0min, spk_th=8.0,
                                sig=SIG, keep_scores=False, **geo.args())
    cpu = _detect(data, w, geo, nt0min=nt0min, keep_scores=False)
    assert gpu.dout is None and gpu.kkmax is None and cpu.n_found >= 2
    for name in ("times", "centres", "amplitudes", "kk", "features"):
        np.testing.assert_array_equal(getattr(gpu, name).get(), getattr(cpu, name), err_msg=name)
    assert gpu.n_found == cpu.n_found
