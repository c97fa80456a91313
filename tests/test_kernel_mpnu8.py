"""mexMPnu8 (template-matching pursuit): numba twin vs the slow literal reference on ragged
shapes, known answers, batch edges, spike holes, capacity, bad input; CUDA vs twin; nvcc."""
import numba
import numpy as np
import pytest

from pykilosort.errors import KilosortError
from pykilosort.kernels.mpnu8 import (SpikeCapacityError, match_templates, scan_ranges)
from pykilosort.kernels.registry import cuda_source_path, nvcc_compile, registered

from naive_mpnu8 import mpnu8_naive
from template_problems import random_templates

OUTPUTS = ("st", "template", "amplitude", "vexp", "template_features", "pc_features", "dWU",
           "residual", "nsp")


def _templates(rng, **kw):
    """The inputs of a mexMPnu8 call except data (tests/template_problems.py)."""
    out = random_templates(rng, **kw)
    del out["overlap"]
    return out


def _waveform(kw, f):
    """(nt0, Nchan) unit-amplitude waveform of template f."""
    return np.einsum("tk,ck->tc", kw["W"][:, f], kw["U"][:, f])


def _data(rng, kw, *, NT, spikes, noise):
    """Noise plus a * template f at start time t for each (t, f, a) in spikes."""
    nt0, nchan = kw["W"].shape[0], kw["U"].shape[0]
    data = noise * rng.standard_normal((NT, nchan))
    for t, f, a in spikes:
        data[t:t + nt0] += a * _waveform(kw, f)
    return np.asfortranarray(data, np.float32)


def _random_problem(seed, *, NT, nchan, nfilt, nt0, nnear, nrank=3, n_spikes, noise=0.5):
    rng = np.random.default_rng(seed)
    kw = _templates(rng, nchan=nchan, nfilt=nfilt, nt0=nt0, nnear=nnear, nrank=nrank)
    spikes = [(rng.integers(0, NT - nt0), f, kw["mu"][f] * rng.uniform(0.6, 1.4))
              for f in rng.integers(0, nfilt, n_spikes)]
    return _data(rng, kw, NT=NT, spikes=spikes, noise=noise), kw


def _assert_equal_to_naive(res, ref):
    order = np.lexsort((ref["round"], ref["st"]))  # ours: by time, then round
    np.testing.assert_array_equal(res.round_index, ref["round"][order])
    for name in OUTPUTS:
        expected = ref[name]
        if expected is None:
            continue
        if name in ("st", "template", "amplitude", "vexp"):
            expected = expected[order]
        elif name in ("template_features", "pc_features"):
            expected = expected[..., order]
        np.testing.assert_array_equal(getattr(res, name), expected, err_msg=name)


# (NT, Nchan, Nfilt, nt0, NchanNear, Nrank, spikes, block, stable, features, ignore_first_nt0)
CASES = {
    "blocks64_stable_features": (700, 7, 5, 21, 5, 3, 30, 64, True, True, False),
    "full_cover_fast_mode": (333, 3, 2, 11, 3, 3, 14, None, False, True, False),
    "ragged_block100_fix": (517, 9, 7, 15, 4, 2, 40, 100, True, True, True),
    "dense_overlaps_block32_asymmetric_UtU": (450, 5, 6, 13, 5, 3, 45, 32, True, False, False),
    "one_channel_one_template": (260, 1, 1, 9, 1, 1, 8, 50, True, True, False),
}


def _case_problem(case):
    NT, nchan, nfilt, nt0, nnear, nrank, n_spikes, block, stable, features, fix = CASES[case]
    data, kw = _random_problem(7, NT=NT, nchan=nchan, nfilt=nfilt, nt0=nt0, nnear=nnear,
                               nrank=nrank, n_spikes=n_spikes)
    if "asymmetric" in case:  # UtU[i, j]: spikes of i update template j, not the reverse
        kw["UtU"] = (np.random.default_rng(1).random((nfilt, nfilt)) < 0.5) | np.eye(nfilt, dtype=bool)
        assert not np.array_equal(kw["UtU"], kw["UtU"].T)
    edges = [(NT - nt0 - 1, 0, kw["mu"][0]), (NT - 2 * nt0 - 3, nfilt - 1, kw["mu"][-1])]
    if fix:  # spikes at the start, where scores are kept at 0 for t < nt0
        edges += [(nt0 - 1, 0, 2 * kw["mu"][0]), (nt0 + 6, 1, kw["mu"][1])]
    data += _data(np.random.default_rng(2), kw, NT=NT, noise=0.0, spikes=edges)
    opts = dict(th=4.0, th_average=6.0, lam=10.0, n_rounds=12, template_features=features,
                pc_features=features, stable_mode=stable, ignore_first_nt0=fix)
    return data, kw, opts, block, n_spikes


@pytest.mark.parametrize("case", CASES)
def test_twin_equals_literal_reference(case):
    data, kw, opts, block, n_spikes = _case_problem(case)
    res = match_templates(data, **kw, **opts, legacy_block=block)
    ref = mpnu8_naive(data, **kw, **opts, block=block)
    assert res.st.size >= n_spikes // 3 and res.round_index.max() >= 1  # several rounds ran
    _assert_equal_to_naive(res, ref)
    assert res.rounds_exhausted == (ref["round"].max() == opts["n_rounds"] - 1)


def _infinite_amplitude_problem():
    """Template 0 on channels 0-2, template 1 on 3-5 (U exactly 0 elsewhere). An inf sample on
    channel 0 gives template 0 an infinite amplitude at st = 94; channels 3-5 hold -0.0 in the
    window of the finite spike at st = 40."""
    rng = np.random.default_rng(12)
    kw = _templates(rng, nchan=6, nfilt=2, nt0=15, nnear=3, iW=[1, 4])
    data = _data(rng, kw, NT=200, spikes=[(40, 0, 10.0), (150, 1, 12.0)], noise=0.01)
    data[100, 0] = np.inf
    data[40:55, 3:] = -0.0
    return data, kw


def _bits(a):
    return np.asarray(a).view(np.uint32)


@pytest.mark.parametrize("stable", [True, False], ids=["stable", "fast"])
def test_subtraction_covers_every_channel_like_the_original(stable):
    """subtract_spikes(_v4) adds -y * sum_k W U on every channel, also where U is 0: an infinite
    amplitude makes that inf * 0 = NaN outside the template's channels, while a finite one
    adds -0.0 there and leaves every bit (-0.0 included) as it was."""
    data, kw = _infinite_amplitude_problem()
    opts = dict(th=5.0, th_average=5.0, lam=10.0, stable_mode=stable, template_features=True,
                pc_features=True)
    with np.errstate(invalid="ignore", over="ignore"):
        res = match_templates(data, **kw, **opts, legacy_block=None)
        ref = mpnu8_naive(data, **kw, **opts, block=None)
    assert res.st.tolist() == [40, 94, 150] and np.isinf(res.amplitude[1])
    _assert_equal_to_naive(res, ref)
    np.testing.assert_array_equal(_bits(res.residual), _bits(ref["residual"]))  # signs of 0
    assert np.isnan(res.residual[94:109, 3:]).all()
    assert (_bits(res.residual[40:55, 3:]) == _bits(np.float32(-0.0))).all()


def test_layouts_dtypes_and_shapes():
    data, kw = _random_problem(3, NT=400, nchan=5, nfilt=4, nt0=13, nnear=4, n_spikes=12)
    res = match_templates(data, **kw, th=4.0, th_average=4.0, lam=10.0, legacy_block=64,
                          template_features=True, pc_features=True)
    n = res.st.size
    expect = dict(st=((n,), np.int32), template=((n,), np.int32), amplitude=((n,), np.float32),
                  vexp=((n,), np.float32), round_index=((n,), np.int32),
                  template_features=((3, n), np.float32), pc_features=((4, 3, n), np.float32),
                  dWU=((13, 5, 4), np.float64), residual=((400, 5), np.float32),
                  nsp=((4,), np.int32))
    for name, (shape, dtype) in expect.items():
        a = getattr(res, name)
        assert a.shape == shape and a.dtype == dtype, name
        assert a.ndim == 1 or a.flags.f_contiguous, name
    assert np.all(np.diff(res.st.astype(np.int64) * 100 + res.round_index) > 0)  # time, round


def test_two_known_spikes_found_with_their_amplitudes():
    rng = np.random.default_rng(1)
    kw = _templates(rng, nchan=8, nfilt=3, nt0=21, nnear=5, iW=[1, 6, 3])
    kw["mu"][:] = [12.0, 15.0, 9.0]
    spikes = [(100, 0, 12.0), (300, 1, 15.0)]
    data = _data(rng, kw, NT=500, spikes=spikes, noise=0.01)
    res = match_templates(data, **kw, th=5.0, th_average=5.0, lam=10.0, legacy_block=None)
    np.testing.assert_array_equal(res.st, [100, 300])
    np.testing.assert_array_equal(res.template, [0, 1])
    np.testing.assert_allclose(res.amplitude, [12.0, 15.0], rtol=2e-3)
    # amplitude == mu: score b^2/(1+lam) - lam mu^2 with b = mu (1 + lam) is mu^2
    np.testing.assert_allclose(res.vexp, [12.0, 15.0], rtol=2e-3)
    assert np.abs(res.residual).max() < 0.06  # only the noise is left
    np.testing.assert_array_equal(res.nsp, [1, 1, 0])
    for t, f, a in spikes:  # dWU: residual + amplitude * template, i.e. the spike's snippet
        np.testing.assert_allclose(res.dWU[:, :, f], data[t:t + 21], atol=1e-4)
    assert not res.dWU[:, :, 2].any()


def test_overlapping_spikes_are_peeled_in_later_rounds():
    rng = np.random.default_rng(2)
    kw = _templates(rng, nchan=6, nfilt=2, nt0=21, nnear=6, iW=[2, 3])
    spikes = [(200, 0, 20.0), (208, 1, 11.0)]  # closer than the lockout of nt0 - 1 samples
    data = _data(rng, kw, NT=500, spikes=spikes, noise=0.01)
    res = match_templates(data, **kw, th=4.0, th_average=4.0, lam=1.0, legacy_block=None)
    found = sorted(zip(res.st.tolist(), res.template.tolist()))
    assert found == [(200, 0), (208, 1)]
    assert res.round_index[res.template == 1][0] >= 1  # the weaker one after the subtraction
    # matching pursuit: the first amplitude includes the overlap c = <T0, T1 shifted by 8>,
    # the second is measured on what the first subtraction left
    shifted = np.zeros((29, 6))
    shifted[8:] = _waveform(kw, 1)
    c = float(np.sum(_waveform(kw, 0) * shifted[:21]))
    a0 = 20.0 + 11.0 * c
    np.testing.assert_allclose(res.amplitude[np.argsort(res.template)],
                               [a0, 11.0 + (20.0 - a0) * c], rtol=1e-3)
    assert np.abs(res.residual).max() < 0.3


def test_scores_within_1e6_of_the_best_do_not_count():
    """bestFilter takes a template only if its score beats the best so far (0 at first) by
    more than 1e-6: a spike scoring 5e-7 is not one, a spike scoring 9e-6 is."""
    rng = np.random.default_rng(12)
    kw = _templates(rng, nchan=3, nfilt=1, nt0=15, nnear=3, iW=[1])
    kw["mu"][:] = 1e-3
    data = _data(rng, kw, NT=400, spikes=[(100, 0, 7e-4), (300, 0, 3e-3)], noise=0.0)
    res = match_templates(data, **kw, th=1e-4, th_average=1e-4, lam=1e-3, legacy_block=None)
    np.testing.assert_array_equal(res.st, [300])


def test_equal_scores_within_the_lockout_are_both_kept():
    """cleanup_spikes drops a peak only for a strictly larger score nearby. Templates whose W
    is 0 after 6 samples make two spikes 8 samples apart score bit-identically."""
    rng = np.random.default_rng(13)
    kw = _templates(rng, nchan=4, nfilt=1, nt0=15, nnear=4, iW=[1])
    kw["W"][:] = 0
    kw["W"][:6, 0] = np.linalg.qr(rng.standard_normal((6, 3)))[0]
    data = _data(rng, kw, NT=300, spikes=[(100, 0, 12.0), (108, 0, 12.0)], noise=0.0)
    res = match_templates(data, **kw, th=5.0, th_average=5.0, lam=10.0, legacy_block=None)
    np.testing.assert_array_equal(res.st, [100, 108])
    np.testing.assert_array_equal(res.round_index, [0, 0])


@pytest.fixture(scope="module")
def edge_problem():
    rng = np.random.default_rng(4)
    kw = _templates(rng, nchan=4, nfilt=1, nt0=15, nnear=4, iW=[1])
    kw["mu"][:] = 10.0
    return rng, kw


def test_spikes_at_the_batch_start(edge_problem):
    rng, kw = edge_problem
    nt0 = 15
    for t, found, fix in [(nt0 - 1, True, False), (nt0 - 2, False, False), (nt0 - 1, False, True),
                          (nt0, True, True)]:
        data = _data(rng, kw, NT=300, spikes=[(t, 0, 10.0)], noise=0.01)
        res = match_templates(data, **kw, th=5.0, th_average=5.0, lam=10.0,
                              legacy_block=None, ignore_first_nt0=fix)
        assert (t in res.st.tolist()) == found, (t, fix)


def test_spike_holes_of_the_launch_geometry(edge_problem):
    """MouseLand/Kilosort#594: the first filtering stops at a multiple of the block, so a lone
    spike near the batch end is never examined; legacy_block=None examines it."""
    rng, kw = edge_problem
    NT, nt0, block = 10 * 32 - 16, 15, 32  # like 64*1024 - 64 with 1024-thread blocks
    r = scan_ranges(NT=NT, nt0=nt0, legacy_block=block)
    assert r.conv_end == 288 and r.score_end == NT - nt0 == 289 and r.centre_end == 302
    hole = 288
    for t, block_, found in [(hole - 1, block, True), (hole, block, False), (hole, None, True),
                             (NT - nt0 - 1, None, True)]:
        data = _data(rng, kw, NT=NT, spikes=[(t, 0, 10.0)], noise=0.01)
        res = match_templates(data, **kw, th=5.0, th_average=5.0, lam=10.0, legacy_block=block_)
        assert (t in res.st.tolist()) == found, (t, block_)


def test_scan_ranges_of_the_original_batch_sizes():
    # v2.0.2 NT = 64*1024 - 64: start times 64512 .. 65410 are never examined (~30 ms)
    r = scan_ranges(NT=65472, nt0=61)
    assert (r.conv_end, r.score_end, r.centre_begin, r.centre_end) == (64512, 65411, 60, 64572)
    r = scan_ranges(NT=65600, nt0=61)  # v2.0 NT = 64*1024 + 64: only 3 samples short
    assert (r.conv_end, r.score_end, r.centre_end) == (65536, 65539, 65596)
    full = scan_ranges(NT=65472, nt0=61, legacy_block=None, ignore_first_nt0=True)
    assert (full.conv_end, full.score_begin, full.centre_end) == (65411, 61, 65412)
    assert scan_ranges(NT=1000, nt0=61).conv_end == 0  # shorter than one block: nothing


def test_empty_and_degenerate_inputs(edge_problem):
    rng, kw = edge_problem
    opts = dict(th=5.0, th_average=5.0, lam=10.0, legacy_block=None,
                template_features=True, pc_features=True)
    data = _data(rng, kw, NT=200, spikes=[(50, 0, 10.0)], noise=0.01)
    none = dict(kw, U=kw["U"][:, :0], W=kw["W"][:, :0], mu=kw["mu"][:0], iW=kw["iW"][:0],
                UtU=kw["UtU"][:0, :0], iList=np.zeros((1, 0), np.int32))
    for d, k, extra in [(data, none, {}), (np.zeros_like(data), kw, {}), (data[:10], kw, {}),
                        (data, kw, dict(n_rounds=0))]:
        res = match_templates(d, **k, **dict(opts, **extra))
        assert res.st.size == 0 and res.template_features.shape == (k["iList"].shape[0], 0)
        assert res.pc_features.shape == (4, k["W"].shape[2], 0)
        assert res.dWU.shape == (15, 4, k["W"].shape[1]) and not res.dWU.any()
        np.testing.assert_array_equal(res.residual, d)


def test_rounds_limit_leaves_spikes_and_says_so(edge_problem):
    """The lockout is global, so spikes closer than nt0 - 1 need one round each: with too few
    rounds the rest stay in the residual and rounds_exhausted is set."""
    rng, kw = edge_problem
    spikes = [(20 + 10 * i, 0, 10.0 + i) for i in range(4)]  # 10 samples apart, lockout 14
    data = _data(rng, kw, NT=200, spikes=spikes, noise=0.0)
    opts = dict(th=5.0, th_average=5.0, lam=10.0, legacy_block=None)
    short = match_templates(data, **kw, **opts, n_rounds=2)
    full = match_templates(data, **kw, **opts)
    assert short.rounds_exhausted and not full.rounds_exhausted
    assert short.st.size < full.st.size and full.round_index.max() >= 2


def test_capacity_exceeded_is_an_error():
    data, kw = _random_problem(5, NT=600, nchan=4, nfilt=3, nt0=13, nnear=4, n_spikes=20)
    opts = dict(th=4.0, th_average=4.0, lam=10.0, legacy_block=None)
    n = match_templates(data, **kw, **opts).st.size
    assert match_templates(data, **kw, **opts, max_spikes=n).st.size == n
    with pytest.raises(SpikeCapacityError, match="max_spikes=3") as info:
        match_templates(data, **kw, **opts, max_spikes=3)
    assert isinstance(info.value, KilosortError)


def test_features_of_a_lone_spike():
    rng = np.random.default_rng(6)
    kw = _templates(rng, nchan=6, nfilt=2, nt0=17, nnear=4, iW=[2, 4])
    kw["iList"] = np.array([[0, 1], [1, 0]], np.int32)
    lam, mu, a = np.float32(10.0), kw["mu"][0], 14.0
    data = _data(rng, kw, NT=300, spikes=[(120, 0, a)], noise=0.0)
    res = match_templates(data, **kw, th=5.0, th_average=5.0, lam=lam, legacy_block=None,
                          template_features=True, pc_features=True)
    assert res.st.tolist() == [120]
    # own template: conv peaks at the spike with the amplitude a
    expected = (a + lam / mu) / np.sqrt(lam / mu ** 2 + 1)
    np.testing.assert_allclose(res.template_features[0, 0], expected, rtol=1e-4)
    # PC features: the spike snippet on template 0's neighbourhood, projected on wPCA
    snippet = a * _waveform(kw, 0)[:, kw["iC"][:, kw["iW"][0]]]
    np.testing.assert_allclose(res.pc_features[:, :, 0], snippet.T @ kw["wPCA"], atol=1e-4)


def test_deterministic_input_untouched_and_thread_count_free():
    data, kw = _random_problem(8, NT=700, nchan=6, nfilt=5, nt0=21, nnear=5, n_spikes=30)
    copy = data.copy()
    opts = dict(th=4.0, th_average=5.0, lam=10.0, legacy_block=64, template_features=True,
                pc_features=True)
    first = match_templates(data, **kw, **opts)
    np.testing.assert_array_equal(data, copy)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = match_templates(data, **kw, **opts)
    finally:
        numba.set_num_threads(threads)
    for name in OUTPUTS:
        np.testing.assert_array_equal(getattr(first, name), getattr(single, name), err_msg=name)


def test_stable_and_fast_modes_agree_closely():
    data, kw = _random_problem(9, NT=600, nchan=5, nfilt=4, nt0=17, nnear=5, n_spikes=25)
    opts = dict(th=4.0, th_average=5.0, lam=10.0, legacy_block=None)
    stable = match_templates(data, **kw, **opts, stable_mode=True)
    fast = match_templates(data, **kw, **opts, stable_mode=False)
    np.testing.assert_array_equal(stable.st, fast.st)
    np.testing.assert_array_equal(stable.template, fast.template)
    np.testing.assert_allclose(stable.residual, fast.residual, atol=1e-5)
    assert not np.array_equal(stable.residual, fast.residual)  # they do round differently


def test_bad_inputs():
    data, kw = _random_problem(10, NT=200, nchan=4, nfilt=2, nt0=11, nnear=3, n_spikes=2)
    opts = dict(th=4.0, th_average=4.0, lam=10.0)
    with pytest.raises(TypeError, match="float32"):
        match_templates(data.astype(np.float64), **kw, **opts)
    with pytest.raises(ValueError, match="iW-1"):
        match_templates(data, **dict(kw, iW=kw["iW"] + 4), **opts)
    with pytest.raises(ValueError, match="iC-1"):
        match_templates(data, **dict(kw, iC=kw["iC"] + 1), **opts)
    with pytest.raises(ValueError, match="iList-1"):
        match_templates(data, **dict(kw, iList=kw["iList"] + 2), **opts, template_features=True)
    with pytest.raises(ValueError, match="U must be"):
        match_templates(data, **dict(kw, U=kw["U"][:3]), **opts)
    with pytest.raises(ValueError, match="needs wPCA"):
        match_templates(data, **dict(kw, wPCA=None), **opts, pc_features=True)
    # learnTemplates passes iList-1 = -1 with features off: accepted, ignored, zeros returned
    res = match_templates(data, **dict(kw, iList=np.full((2, 2), -1, np.int32)), **opts)
    assert res.template_features.shape == (2, res.st.size) and not res.template_features.any()


def test_registry_has_both_implementations():
    assert registered()["mpnu8"] == ("cpu", "cuda")


@pytest.mark.nvcc
def test_kernel_compiles_with_larger_capacities():
    ok, log = nvcc_compile(cuda_source_path("mpnu8.cu"), defines=(
        ("MP_THREADS", 128), ("MP_NT0_MAX", 121), ("MP_NRANK_MAX", 6), ("MP_NEAR_MAX", 64)))
    assert ok, log


# ------------------------------------------------------------------------------ GPU
def _to_gpu(data, kw):
    import cupy

    return cupy.asarray(data, order="F"), {k: cupy.asarray(v) for k, v in kw.items()}


def _assert_same_as_twin(gpu, cpu):
    """The kernels round every product before adding it, like the twin, and the host orders
    spikes like the twin: all outputs are bit-identical (random data has no tied scores)."""
    assert gpu.rounds_exhausted == cpu.rounds_exhausted
    for name in OUTPUTS + ("round_index",):
        np.testing.assert_array_equal(getattr(gpu, name).get(), getattr(cpu, name), err_msg=name)
    assert gpu.residual.flags.f_contiguous and gpu.dWU.flags.f_contiguous
    assert gpu.pc_features.flags.f_contiguous and gpu.template_features.flags.f_contiguous


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_cuda_matches_twin(case):
    data, kw, opts, block, _ = _case_problem(case)
    cpu = match_templates(data, **kw, **opts, legacy_block=block)
    gdata, gkw = _to_gpu(data, kw)
    _assert_same_as_twin(match_templates(gdata, **gkw, **opts, legacy_block=block), cpu)


@pytest.mark.gpu(once=True)  # about 30 s on the CPU executor: one schedule
def test_cuda_matches_twin_on_a_realistic_batch():
    """32 channels, 128 templates, NT = 65600, nt0 = 61, about 1000 spikes."""
    data, kw = _random_problem(11, NT=65600, nchan=32, nfilt=128, nt0=61, nnear=32,
                               n_spikes=1100, noise=1.0)
    kw["iList"] = np.argsort(-kw["UtU"].astype(int), axis=0, kind="stable")[:32].astype(np.int32)
    opts = dict(th=8.0, th_average=8.0, lam=10.0, template_features=True, pc_features=True)
    cpu = match_templates(data, **kw, **opts)
    gdata, gkw = _to_gpu(data, kw)
    gpu = match_templates(gdata, **gkw, **opts)
    _assert_same_as_twin(gpu, cpu)
    again = match_templates(gdata, **gkw, **opts)  # stable mode: the same spikes every time
    np.testing.assert_array_equal(again.st.get(), gpu.st.get())
    np.testing.assert_array_equal(again.residual.get(), gpu.residual.get())


@pytest.mark.gpu
@pytest.mark.parametrize("stable", [True, False], ids=["stable", "fast"])
def test_cuda_matches_twin_with_an_infinite_amplitude(stable):
    data, kw = _infinite_amplitude_problem()
    opts = dict(th=5.0, th_average=5.0, lam=10.0, stable_mode=stable, legacy_block=None)
    with np.errstate(invalid="ignore", over="ignore"):
        cpu = match_templates(data, **kw, **opts)
    gdata, gkw = _to_gpu(data, kw)
    gpu = match_templates(gdata, **gkw, **opts)
    _assert_same_as_twin(gpu, cpu)
    # bit for bit, except the NaNs' own bits: inf - inf gives x86's default NaN (0xFFC00000)
    # on the CPU and 0x7FFFFFFF on an NVIDIA GPU (seen on an H200); NaN positions must agree
    g, c = gpu.residual.get(), np.asarray(cpu.residual)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(c))
    np.testing.assert_array_equal(_bits(np.nan_to_num(g, nan=0.0)), _bits(np.nan_to_num(c, nan=0.0)))


@pytest.mark.gpu
def test_cuda_capacity_error_and_empty():
    data, kw = _random_problem(5, NT=600, nchan=4, nfilt=3, nt0=13, nnear=4, n_spikes=20)
    gdata, gkw = _to_gpu(data, kw)
    # legacy_block=None: with the default 1024-sample blocks and NT=600 no sample is examined,
    # no spike is found, and no capacity can be exceeded
    opts = dict(th=4.0, th_average=4.0, lam=10.0, legacy_block=None)
    n = match_templates(gdata, **gkw, **opts).st.size
    assert n > 3 and n == match_templates(data, **kw, **opts).st.size
    assert match_templates(gdata, **gkw, **opts, max_spikes=n).st.size == n
    with pytest.raises(SpikeCapacityError, match="max_spikes=3") as info:
        match_templates(gdata, **gkw, **opts, max_spikes=3)
    assert isinstance(info.value, KilosortError)
    res = match_templates(gdata * 0, **gkw, **opts, template_features=True, pc_features=True)
    assert res.st.size == 0 and res.pc_features.shape == (4, 3, 0) and not res.dWU.any()


def test_round_toward_zero_like_cuda_double2float_rz(rng):
    """float64 -> float32 rounded toward zero, on ordinary, exact, subnormal, overflowing and
    special values, against numpy's round-to-nearest stepped back with nextafter."""
    from pykilosort.kernels.mpnu8 import _round_toward_zero

    acc = np.concatenate([rng.standard_normal(500) * 10.0 ** rng.integers(-45, 40, 500),
                          [0.0, -0.0, 1.5, -2.0, 1e-50, -1e-50, 1e-40, 3.5e38, -1e300,
                           np.inf, -np.inf, np.nan]]).reshape(2, -1)
    out = np.empty(acc.shape, np.float32)
    with np.errstate(over="ignore"):
        near = acc.astype(np.float32)
        ref = np.where(np.abs(near.astype(np.float64)) > np.abs(acc),
                       np.nextafter(near, np.float32(0)), near)
    _round_toward_zero(acc, out, np.arange(2))
    np.testing.assert_array_equal(out.view(np.int32), ref.view(np.int32))
    assert np.isfinite(out[np.isfinite(acc)]).all()  # overflow rounds to the largest float
