"""Post-processing units on constructed inputs: ccg against an obvious reference, merges, splits,
the cutoff (both modes), get_good_units and the duplicate-spike removal."""
import math

import numpy as np
import pytest
import scipy.io

from pykilosort import postprocess
from pykilosort.correlograms import ccg, nanmin
from pykilosort.cutoff import get_good_units, set_cutoff
from pykilosort.duplicates import remove_duplicate_spikes
from pykilosort.merges import find_merges

from conftest import REFERENCE_DATA
from test_postprocess_reference import _fake_ctx, _field, _run_steps

FS = 30000.0


def refractory_train(rng, *, rate, duration, refractory=0.002):
    """Poisson spike times (s) with a dead time: one neuron."""
    gaps = refractory + rng.exponential(1 / rate - refractory, int(rate * duration * 1.5))
    t = np.cumsum(gaps)
    return t[t < duration]


def slow_ccg_counts(st1, st2, nbins=500, tbin=1e-3):
    """Every pair with |st2 - st1| < nbins*tbin, binned with MATLAB's round (half away from 0)."""
    K = np.zeros(2 * nbins + 1)
    dt = nbins * tbin
    for b in st2:
        for a in st1:
            if b - dt < a < b + dt:
                x = (b - a) / tbin
                K[int(math.copysign(math.floor(abs(x) + 0.5), x)) + nbins] += 1
    return K


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ccg_counts_match_the_obvious_reference(seed):
    rng = np.random.default_rng(seed)
    a = np.round(rng.uniform(0, 5, 300) * 1000) / 1000  # on the bin grid: exact halves and edges
    b = np.round(rng.uniform(0, 5, 200) * 2000) / 2000
    np.testing.assert_array_equal(ccg(a, b).K, slow_ccg_counts(np.sort(a), np.sort(b)))
    np.testing.assert_array_equal(ccg(a, a).K, slow_ccg_counts(np.sort(a), np.sort(a)))


def test_ccg_scores_tell_one_neuron_from_two():
    rng = np.random.default_rng(3)
    one = refractory_train(rng, rate=20, duration=200)
    two = np.sort(np.concatenate([one, refractory_train(rng, rate=20, duration=200)]))
    assert ccg(one, one).Q < 0.2 and ccg(one, one).R < 0.05
    assert ccg(two, two).Q > 0.5


def test_ccg_scores_without_evidence_are_nan():
    """One spike, or spikes more than 0.5 s apart: 0/0 as in MATLAB, skipped by min/max."""
    for st in ([1.0], [1.0, 3.0, 6.0]):
        r = ccg(st, st)
        assert math.isnan(r.Q) and math.isnan(r.R)
    assert nanmin(np.array([np.nan, 2.0, 1.0])) == 1.0 and math.isnan(nanmin(np.array([np.nan])))


def _labels_for(trains):
    times = np.concatenate([np.round(t * FS) for t in trains]).astype(np.int64)
    labels = np.concatenate([np.full(t.size, k) for k, t in enumerate(trains)]).astype(np.int32)
    order = np.argsort(times, kind="stable")
    return times[order], labels[order]


def test_merges_join_one_neuron_split_in_two_and_nothing_else():
    rng = np.random.default_rng(4)
    neuron = refractory_train(rng, rate=15, duration=300)
    part = rng.random(neuron.size) < 0.4
    other = refractory_train(rng, rate=15, duration=300)
    times, labels = _labels_for([neuron[~part], neuron[part], other])
    sim = np.array([[1, 0.9, 0.9], [0.9, 1, 0.9], [0.9, 0.9, 1]], np.float32)
    res = find_merges(times=times, templates=labels, sim=sim, fs=FS)
    assert res.merges.tolist() == [[1, 0]]          # the smaller half joins the larger one
    assert set(np.unique(res.templates)) == {0, 2}  # the independent neuron stays apart
    low = np.where(sim > 0.5, 0.45, sim).astype(np.float32)
    assert find_merges(times=times, templates=labels, sim=low, fs=FS).merges.size == 0


def test_cutoff_legacy_guts_a_clean_unit_with_few_strong_spikes():
    """A clean 10 Hz unit whose vexp rarely exceeds Th[0]: the original stops at Th[0] for lack
    of significance and keeps the spikes above 10.5; the default keeps them all and finds it
    refractory at lower thresholds."""
    rng = np.random.default_rng(5)
    st = refractory_train(rng, rate=10, duration=60)
    vexp = rng.uniform(4.2, 11.0, st.size)
    times = np.round(st * FS).astype(np.int64)
    kw = dict(times=times, templates=np.zeros(st.size, np.int32), vexp=vexp, n_templates=1,
              fs=FS, Th=(10.0, 4.0))
    legacy, fixed = set_cutoff(**kw, legacy=True), set_cutoff(**kw, legacy=False)
    assert legacy.Ths[0] == 10.5 and legacy.keep.sum() == (vexp > 10.5).sum()
    assert fixed.keep.all() and fixed.good[0] and fixed.Ths[0] == 4.0


def test_cutoff_legacy_calls_a_unit_without_evidence_good():
    times = np.array([1000, 60000, 150000])  # > 0.5 s apart: no correlogram
    kw = dict(times=times, templates=np.zeros(3, np.int32), vexp=np.full(3, 20.0), n_templates=2,
              fs=FS, Th=(10.0, 4.0))
    assert set_cutoff(**kw, legacy=True).good.tolist() == [True, False]
    fixed = set_cutoff(**kw, legacy=False)
    assert fixed.good.tolist() == [False, False] and fixed.keep.all()
    assert fixed.est_contam_rate.tolist() == [1.0, 1.0]  # NaN and no spikes: unknown


def test_cutoff_stops_at_contamination():
    """Two neurons in one unit, the second only at low vexp: the threshold stays above it."""
    rng = np.random.default_rng(6)
    a, b = refractory_train(rng, rate=20, duration=60), refractory_train(rng, rate=20, duration=60)
    times, labels = _labels_for([a, b])
    vexp = np.where(np.isin(times, np.round(a * FS)), rng.uniform(8, 20, times.size),
                    rng.uniform(4.2, 6.8, times.size))
    r = set_cutoff(times=times, templates=np.zeros(times.size, np.int32), vexp=vexp,
                   n_templates=1, fs=FS, Th=(10.0, 4.0))
    assert r.good[0] and 6.5 <= r.Ths[0] <= 8.0
    assert not r.keep[vexp < 6.8].any()


def test_good_units_rejects_spread_waveforms():
    xc, yc = np.zeros(40), np.arange(40) * 20.0
    dwu = np.zeros((61, 40, 2))
    dwu[:, 10, 0] = np.hanning(61)          # one channel: spread 0
    dwu[:, ::3, 1] = np.hanning(61)[:, None]  # every third channel over 800 um
    good = get_good_units(dWU=dwu, xc=xc, yc=yc, good=np.array([True, True]))
    assert good.tolist() == [True, False]
    assert get_good_units(dWU=dwu, xc=xc, yc=yc, good=np.array([False, True])).tolist() == [False, False]


def test_duplicates_removes_the_smaller_templates_copies_nearby_only():
    n_t, n_c = 61, 8
    W = np.zeros((n_t, 3, 3))
    W[:, :, 0] = np.hanning(n_t)[:, None]
    U = np.zeros((n_c, 3, 3))
    U[1, 0, 0], U[1, 1, 0], U[6, 2, 0] = 2.0, 1.0, 1.5   # templates 0 and 1 share channel 1
    xc, yc = np.zeros(n_c), np.arange(n_c) * 40.0        # channel 6 is 200 um from channel 1
    times = np.array([1000, 1005, 5000, 5003, 9000, 9002])
    templates = np.array([0, 1, 1, 0, 0, 2])
    remove = remove_duplicate_spikes(times=times, templates=templates, W=W, U=U, Wrot=np.eye(n_c),
                                     scaleproc=1.0, xc=xc, yc=yc, fs=FS)
    assert remove.tolist() == [False, True, True, False, False, False]


# ------------------------------------------------------------------ default mode on real rez
@pytest.fixture(scope="module")
def pp_rez():
    return scipy.io.loadmat(REFERENCE_DATA / "ks2_postprocess_input.mat", squeeze_me=False,
                            struct_as_record=False)["rez"][0, 0]


@pytest.mark.parametrize("compat", [True, False])
def test_split_pieces_get_their_own_waveform_unless_compat(pp_rez, compat):
    """The original gives the new cluster the mean waveform of the spikes that stay (and vice
    versa); by default each piece gets the waveform of its own spikes."""
    ctx = _fake_ctx(pp_rez, ks25=False, compat=compat)
    out = _run_steps(ctx, ["merges", "split_svd"])["split_svd"]
    assert len(out["splits"]) >= 1
    wpca = _field(pp_rez.ops[0, 0], "wPCA").astype(np.float32)
    labels = out["st3"]["template"]
    for ik, new in out["splits"]:
        chans = out["iNeighPC"][:, new]
        waveform = {}
        for k in (ik, new):
            feats = np.asarray(ctx.intermediate.cProjPC)[labels == k].mean(axis=0, dtype=np.float32)
            waveform[k] = wpca @ feats
        assert out["isplit"][ik, new] and out["simScore"][ik, new] == 1
        own, other = (waveform[new], waveform[ik]) if not compat else (waveform[ik], waveform[new])
        np.testing.assert_allclose(out["dWU"][:, chans, new], own, rtol=0, atol=1e-5)
        assert np.abs(out["dWU"][:, chans, new] - other).max() > 1e-3


def test_postprocess_steps_keep_spike_index_in_step(pp_rez):
    ctx = _fake_ctx(pp_rez, ks25=False, compat=False)
    out = _run_steps(ctx, ["merges", "split_svd", "split_amplitude", "cutoff"])
    st3 = out["cutoff"]["st3"]
    rows = out["cutoff"]["spike_index"]
    learn_st3 = _field(pp_rez, "st3")
    np.testing.assert_array_equal(st3["time"], learn_st3[rows, 0])
    assert rows.size == st3.size and np.all(np.diff(rows) > 0)


def test_split_of_a_cluster_without_spread_does_nothing():
    """Identical features: the mixture has no second Gaussian (NaN), one piece is empty; MATLAB's
    mean of no rows is a NaN row, and no split happens."""
    from pykilosort.splits import _try_split

    rng = np.random.default_rng(7)
    clp0 = np.tile(rng.standard_normal(96).astype(np.float32), (400, 1))
    seconds = np.sort(rng.uniform(0, 100, 400))
    wpca = rng.standard_normal((61, 3)).astype(np.float32)
    for init in ("svd", "mean"):
        cand, vetoed = _try_split(clp0, seconds, init=init, wpca=wpca, auc_split=0.9,
                                  running_avg=True)
        assert cand is None and not vetoed
