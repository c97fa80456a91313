"""template_svd (mexSVDsmall2): numba twin vs a literal reference, properties, errors, CUDA."""
import math

import numpy as np
import pytest

from pykilosort.errors import KilosortError, ParameterError
from pykilosort.kernels.registry import cuda_source_path, nvcc_compile, registered
from pykilosort.kernels.svdsmall import (alignment_sample, cuda_launch_geometry, template_svd)
from pykilosort.neighbours import get_closest_channels
from pykilosort.upsampling import get_kernels

F32_1EM5 = float(np.float32(1e-5))
F32_1EM7 = float(np.float32(1e-7))


# ---------------------------------------------------------------------------------------------
# Slow reference: the five kernels of mexSVDsmall2.cu, step by step, on a literally blanked copy
# of dWU. Every "x = 0; for ...: x += a*b" of the CUDA code is a cumulative sum (numpy's cumsum
# adds in order), so the reference rounds exactly as the mex arithmetic does without FMAs.

def _loop_sum(start, terms):
    """start + terms[0] + terms[1] + ... in this order, along the last axis."""
    terms = np.asarray(terms, np.float64)
    first = np.full(terms.shape[:-1] + (1,), start, np.float64)
    return np.cumsum(np.concatenate([first, terms], axis=-1), axis=-1)[..., -1]


def _first_abs_max(values):
    xmax, imax, sgn = 0.0, 0, 1.0
    for t, x in enumerate(values):
        if abs(x) > xmax:
            xmax, imax, sgn = abs(x), t, math.copysign(1.0, x)
    return imax, sgn


ORIGINAL_POWER_ITER = 100  # mexSVDsmall2.cu, getW: `for (i=0;i<100;i++)`, not a Params entry


def svd_reference(dWU, W, iC, iW, Ka, Kb, tmax, n_iter=ORIGINAL_POWER_ITER):
    nt0, nchan, nfilt = dWU.shape
    nrank, nup = W.shape[2], Ka.shape[0]
    W = np.array(W, np.float64)
    U = np.zeros((nchan, nfilt, nrank))
    mu = np.zeros(nfilt)
    blank = np.zeros_like(dWU)  # blankdWU
    for f in range(nfilt):
        for c in iC[:, iW[f]]:
            blank[:, c, f] = dWU[:, c, f]
    for f in range(nfilt):
        d = blank[:, :, f]
        wtw = _loop_sum(0.0, d[:, None, :] * d[None, :, :])  # getwtw: [i, j] summed over channels
        sW = W[:, f, :].copy()  # getW
        for k in range(nrank):
            for i in range(n_iter):
                x = _loop_sum(0.0, wtw * sW[None, :, k])  # x[tid] = sum_t wtw[tid, t] sW[t]
                if i < n_iter - 1:
                    sW[:, k] = x
                    sW[:, k] = x / math.sqrt(_loop_sum(F32_1EM5, sW[:, k] * sW[:, k]))
            wtw = wtw - sW[None, :, k] * x[:, None]
        sW[:, 0] = -sW[:, 0] * math.copysign(1.0, sW[tmax, 0])
        W[:, f, :] = sW
        for k in range(nrank):  # getU, over every channel of the blanked copy
            U[:, f, k] = _loop_sum(0.0, W[None, :, f, k] * d.T)
        norms = [math.sqrt(_loop_sum(0.0, U[:, f, k] * U[:, f, k])) for k in range(nrank)]
        mu[f] = math.sqrt(_loop_sum(F32_1EM7, np.array(norms) ** 2))  # reNormalize
        U[:, f, :] = U[:, f, :] / mu[f]
        imax, _ = _first_abs_max(W[:, f, 0])
        shifted = np.array([W[(t + imax - tmax) % nt0, f, :] for t in range(nt0)])
        up = [_loop_sum(0.0, Ka[a, :] * shifted[:, 0]) for a in range(nup)]
        iup, sgn = _first_abs_max(up)
        for k in range(nrank):
            for t in range(nt0):
                x = _loop_sum(0.0, Kb[t, :, iup] * shifted[:, k])
                W[t, f, k] = -x * sgn if k == 0 else x
    return W, U, mu


# ---------------------------------------------------------------------------------------------
# Inputs

def _nt0min(nt0):
    return math.ceil(20 * nt0 / 61)


def _probe_neighbourhoods(nchan, nnear):
    xc = np.tile([0.0, 32.0], nchan)[:nchan]
    yc = np.arange(nchan) * 20.0
    return get_closest_channels(xc=xc, yc=yc, sigma_mask=30.0, n_closest=nnear)[0]


def _waveform(t, centre, width=1.5):
    """A trough at `centre` followed by a slower positive rebound."""
    return (-np.exp(-(t - centre) ** 2 / (2 * width ** 2))
            + 0.35 * np.exp(-(t - centre - 6) ** 2 / (2 * (2 * width) ** 2)))


def _templates(rng, nt0, nchan, nfilt, iC, iW, noise=0.05):
    """Spike-like rank-2 templates on their neighbourhood, plus noise on every channel."""
    t = np.arange(nt0, dtype=np.float64)
    dWU = noise * rng.standard_normal((nt0, nchan, nfilt))
    for f in range(nfilt):
        centre = rng.uniform(0.2, 0.8) * nt0
        for j, c in enumerate(iC[:, iW[f]]):
            amp = 20 * np.exp(-j / 3) * rng.uniform(0.5, 1.5)
            dWU[:, c, f] += amp * _waveform(t, centre + 0.3 * j)
    return np.asfortranarray(dWU)


def _case(rng, nt0, nchan, nnear, nfilt, nrank):
    iC = _probe_neighbourhoods(nchan, nnear)
    iW = rng.integers(0, nchan, nfilt)
    iW[0], iW[-1] = 0, nchan - 1  # first and last channel
    dWU = _templates(rng, nt0, nchan, nfilt, iC, iW)
    W = np.asfortranarray(rng.standard_normal((nt0, nfilt, nrank)))
    Ka, Kb = get_kernels(nt0=nt0, nt0min=_nt0min(nt0))
    return dict(dWU=dWU, W=W, iC=iC, iW=iW, Ka=Ka, Kb=Kb)


def _run_both(case, fix=False, n_iter=None):
    """n_iter=None leaves both sides at their defaults, so the reference's hard-coded count
    pins template_svd's default (a wrong N_POWER_ITER changes the last bits of W, U, mu)."""
    nt0min = _nt0min(case["dWU"].shape[0])
    iters = {} if n_iter is None else dict(n_iter=n_iter)
    got = template_svd(case["dWU"], case["W"], iC=case["iC"], iW=case["iW"], Ka=case["Ka"],
                       Kb=case["Kb"], nt0min=nt0min, fix_trough_offset=fix, **iters)
    with np.errstate(invalid="ignore"):  # inf - inf in the cases that feed it infinities
        ref = svd_reference(case["dWU"], case["W"], case["iC"], case["iW"], case["Ka"],
                            case["Kb"], alignment_sample(nt0min, fix_trough_offset=fix), **iters)
    return got, ref


def _assert_same(got, ref):
    for name, g, r in zip(("W", "U", "mu"), got, ref):
        assert g.shape == r.shape, name
        np.testing.assert_array_equal(g, r, err_msg=name)


# (nt0, nchan, nnear, nfilt, nrank): partial neighbourhoods, neighbourhoods covering every
# channel, nt0 shorter than the 10 upsampling phases, more ranks than the original's 3
SHAPES = [(5, 1, 1, 1, 3), (13, 6, 3, 5, 3), (21, 9, 9, 7, 2), (61, 40, 32, 6, 3),
          (33, 70, 7, 3, 4)]


# ---------------------------------------------------------------------------------------------
# Twin vs reference

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fix", [False, True], ids=["original", "fixed"])
def test_twin_equals_reference_exactly(rng, shape, fix):
    case = _case(rng, *shape)
    W0 = case["W"].copy()
    dWU0 = case["dWU"].copy()
    got, ref = _run_both(case, fix)
    _assert_same(got, ref)
    assert got.W.flags.f_contiguous and got.U.flags.f_contiguous
    np.testing.assert_array_equal(case["W"], W0)  # inputs untouched
    np.testing.assert_array_equal(case["dWU"], dWU0)


@pytest.mark.parametrize("n_iter", [1, 2, 7])
def test_few_iterations_equal_reference(rng, n_iter):
    """n_iter=1: no normalisation at all, the warm start comes back (before alignment)."""
    _assert_same(*_run_both(_case(rng, 13, 6, 3, 4, 3), n_iter=n_iter))


def test_repeated_channels_order_and_c_layout(rng):
    """A neighbourhood listing a channel twice or out of order is the same set of channels; the
    memory layout of the inputs does not matter."""
    case = _case(rng, 17, 8, 4, 5, 3)
    case["iC"] = case["iC"].copy()
    case["iC"][3, :] = case["iC"][1, :]  # repeat
    got, ref = _run_both(case)
    _assert_same(got, ref)
    shuffled = dict(case, iC=case["iC"][::-1].copy(), dWU=np.ascontiguousarray(case["dWU"]),
                    W=np.ascontiguousarray(case["W"]))
    _assert_same(_run_both(shuffled)[0], got)


def test_channels_outside_the_neighbourhood_are_ignored(rng):
    case = _case(rng, 13, 10, 3, 4, 3)
    got = _run_both(case)[0]
    outside = np.ones(case["dWU"].shape, bool)
    for f, c in enumerate(case["iW"]):
        outside[:, case["iC"][:, c], f] = False
    case["dWU"][outside] = np.nan
    got_nan, ref = _run_both(case)
    _assert_same(got_nan, ref)
    _assert_same(got_nan, got)
    assert np.all(got.U[outside[0]] == 0)  # U (Nchan, Nfilt, nrank) vs outside[0] (Nchan, Nfilt)


def test_nan_inside_the_neighbourhood_spreads_like_the_original(rng):
    """The original multiplies W by the zeros outside the neighbourhood: NaN everywhere in U."""
    case = _case(rng, 13, 10, 3, 3, 3)
    case["dWU"][4, case["iC"][1, case["iW"][1]], 1] = np.nan
    got, ref = _run_both(case)
    _assert_same(got, ref)
    assert np.isnan(got.mu[1]) and np.isnan(got.U[:, 1]).all()
    assert np.isfinite(got.mu[[0, 2]]).all() and np.isfinite(got.U[:, [0, 2]]).all()


def test_infinite_warm_start_spreads_like_the_original(rng):
    """With one iteration an infinite starting vector survives into W; the original's products
    with the zeros outside the neighbourhood are then NaN, and so are mu and all of U."""
    case = _case(rng, 13, 10, 3, 3, 3)
    case["W"][2, 1, 0] = np.inf
    got, ref = _run_both(case, n_iter=1)
    _assert_same(got, ref)
    assert np.isnan(got.mu[1]) and np.isnan(got.U[:, 1]).all() and np.isfinite(got.mu[[0, 2]]).all()


def test_first_strict_maximum_wins():
    """Ties go to the first index, NaNs and zeros are never chosen (the CUDA loops use >)."""
    from pykilosort.kernels.svdsmall import _first_abs_max as twin_first_abs_max

    for values, expected in [([1.0, -3.0, 3.0, 2.0], 1), ([0.0, -0.0, 0.0], 0),
                             ([np.nan, 0.5, np.nan, -0.5], 1), ([2.0, 2.0], 0)]:
        values = np.array(values)
        assert twin_first_abs_max(values)[0] == expected == _first_abs_max(values)[0]


def test_zero_template_and_zero_warm_start(rng):
    case = _case(rng, 13, 6, 3, 3, 3)
    case["dWU"][:, :, 1] = 0
    case["W"][:, 2, :] = 0
    got, ref = _run_both(case)
    _assert_same(got, ref)
    assert got.mu[1] == math.sqrt(F32_1EM7)
    assert np.all(got.W[:, 1] == 0) and np.all(got.U[:, 1] == 0)
    assert np.all(got.W[:, 2] == 0) and got.mu[2] == math.sqrt(F32_1EM7)


def test_no_templates():
    Ka, Kb = get_kernels(nt0=11, nt0min=4)
    out = template_svd(np.zeros((11, 5, 0)), np.zeros((11, 0, 3)), iC=_probe_neighbourhoods(5, 2),
                       iW=np.zeros(0, np.int32), Ka=Ka, Kb=Kb, nt0min=4)
    assert out.W.shape == (11, 0, 3) and out.U.shape == (5, 0, 3) and out.mu.shape == (0,)


def test_deterministic(rng):
    case = _case(rng, 61, 40, 32, 12, 3)
    a = template_svd(case["dWU"], case["W"], iC=case["iC"], iW=case["iW"], Ka=case["Ka"],
                     Kb=case["Kb"], nt0min=20)
    b = template_svd(case["dWU"], case["W"], iC=case["iC"], iW=case["iW"], Ka=case["Ka"],
                     Kb=case["Kb"], nt0min=20)
    _assert_same(a, b)


# ---------------------------------------------------------------------------------------------
# Properties

def _rank1_case(nt0, trough, nchan=12, nnear=5, width=2.0):
    """Templates outer(w, u) on the neighbourhood only, w with its trough at sample `trough`."""
    iC = _probe_neighbourhoods(nchan, nnear)
    iW = np.array([0, 5, nchan - 1])
    t = np.arange(nt0, dtype=np.float64)
    w = _waveform(t, trough, width)
    dWU = np.zeros((nt0, nchan, iW.size))
    for f, c in enumerate(iW):
        for j, ch in enumerate(iC[:, c]):
            dWU[:, ch, f] = (30 - 5 * j + f) * w
    W0 = np.asfortranarray(np.random.default_rng(1).standard_normal((nt0, iW.size, 3)))
    return np.asfortranarray(dWU), W0, iC, iW, w


def _identity_kernels(nt0, peak, nup=10):
    """Kernels that make the alignment a pure integer shift: every phase of Ka reads sample
    peak, so all tie and the first strict maximum, phase 0, must win; its Kb is the identity
    (the other phases are NaN, to show if they are ever used)."""
    Ka = np.zeros((nup, nt0))
    Ka[:, peak] = 1.0
    Kb = np.full((nt0, nt0, nup), np.nan)
    Kb[:, :, 0] = np.eye(nt0)
    return Ka, np.asfortranarray(Kb)


def _recon(W, U, mu, f, ranks=1):
    return mu[f] * W[:, f, :ranks] @ U[:, f, :ranks].T


@pytest.mark.parametrize("fix", [False, True], ids=["original", "fixed"])
def test_rank1_template_is_reproduced_exactly_without_interpolation(fix):
    nt0, nt0min = 61, 20
    peak = alignment_sample(nt0min, fix_trough_offset=fix)
    Ka, Kb = _identity_kernels(nt0, peak)
    dWU, W0, iC, iW, w = _rank1_case(nt0, trough=peak)
    W, U, mu = template_svd(dWU, W0, iC=iC, iW=iW, Ka=Ka, Kb=Kb, nt0min=nt0min,
                            fix_trough_offset=fix)
    for f in range(iW.size):
        np.testing.assert_allclose(_recon(W, U, mu, f), dWU[:, :, f], rtol=0, atol=1e-9 * mu[f])
        np.testing.assert_allclose(W[:, f, 0], w / np.linalg.norm(w), rtol=0, atol=1e-9)
        assert np.abs(U[:, f, 1:]).max() < 1e-9  # nothing left for ranks 2, 3
        np.testing.assert_allclose(mu[f], np.linalg.norm(dWU[:, :, f]), rtol=1e-9)  # + 1e-7 in mu^2


def test_rank3_template_is_reproduced_exactly_without_interpolation(rng):
    nt0, nt0min, nchan = 41, 14, 10
    Ka, Kb = _identity_kernels(nt0, nt0min)
    iC = _probe_neighbourhoods(nchan, nchan)
    t = np.arange(nt0, dtype=np.float64)
    temporal = np.linalg.qr(np.stack([_waveform(t, nt0min, 2.0), _waveform(t, 25, 4.0),
                                      np.sin(t / 3)], axis=1))[0]
    temporal[:, 0] *= -np.sign(temporal[nt0min, 0])  # largest |value| (the trough) at nt0min
    spatial = np.linalg.qr(rng.standard_normal((nchan, 3)))[0]
    dWU = (temporal * [50.0, 20.0, 7.0]) @ spatial.T
    W, U, mu = template_svd(dWU[:, :, None], rng.standard_normal((nt0, 1, 3)), iC=iC,
                            iW=np.array([3]), Ka=Ka, Kb=Kb, nt0min=nt0min)
    np.testing.assert_allclose(_recon(W, U, mu, 0, 3), dWU, rtol=0, atol=1e-9 * mu[0])
    np.testing.assert_allclose(mu[0], np.sqrt(50.0 ** 2 + 20.0 ** 2 + 7.0 ** 2), rtol=1e-9)
    np.testing.assert_allclose(np.abs(W[:, 0].T @ temporal), np.eye(3), atol=1e-9)


# troughs where the test waveform is ~0 at both ends, so that circular shifts wrap nothing
@pytest.mark.parametrize("trough", [12, 20, 27])
@pytest.mark.parametrize("width", [1.5, 3.0])
def test_trough_lands_before_nt0min_original_quirk(trough, width):
    """The original puts the integer peak at 0-based nt0min (MATLAB nt0min + 1) while Ka's
    window spans 1.5 to 0.6 samples before it: one of its last phases wins and W comes out
    0.4 samples earlier than its trough, i.e. centred 0.6 samples after MATLAB's nt0min."""
    nt0, nt0min = 61, 20
    Ka, Kb = get_kernels(nt0=nt0, nt0min=nt0min)
    dWU, W0, iC, iW, w = _rank1_case(nt0, trough=trough, width=width)
    W, U, mu = template_svd(dWU, W0, iC=iC, iW=iW, Ka=Ka, Kb=Kb, nt0min=nt0min)
    t = np.arange(nt0, dtype=np.float64)
    expected = _waveform(t, nt0min - 0.4, width)
    expected /= np.linalg.norm(expected)
    for f in range(iW.size):
        assert _upsampled_phase(Ka, W[:, f, 0]) in (8, 9)
        assert np.abs(W[:, f, 0] - expected).max() < 0.006
        assert np.abs(W[:, f, 0] - np.roll(w, nt0min - trough) / np.linalg.norm(w)).max() > 0.03


@pytest.mark.parametrize("trough", [12, 19, 27])
@pytest.mark.parametrize("width", [1.5, 3.0])
def test_trough_lands_at_matlab_nt0min_with_the_fix(trough, width):
    nt0, nt0min = 61, 20
    Ka, Kb = get_kernels(nt0=nt0, nt0min=nt0min)
    dWU, W0, iC, iW, w = _rank1_case(nt0, trough=trough, width=width)
    W, _, _ = template_svd(dWU, W0, iC=iC, iW=iW, Ka=Ka, Kb=Kb, nt0min=nt0min,
                           fix_trough_offset=True)
    for f in range(iW.size):
        assert np.argmin(W[:, f, 0]) == nt0min - 1
        assert _upsampled_phase(Ka, W[:, f, 0]) in (4, 5, 6)  # within 0.1 sample of it
        np.testing.assert_allclose(W[:, f, 0], np.roll(w, nt0min - 1 - trough) / np.linalg.norm(w),
                                   atol=0.04)


def _upsampled_phase(Ka, w):
    return int(np.argmax(np.abs(Ka @ w)))


@pytest.mark.parametrize("fix", [False, True], ids=["original", "fixed"])
def test_sign_of_U_follows_the_sample_before_alignment_quirk(fix):
    """getW signs W by its value at the alignment sample *before* the shift; reNormalize then
    makes W[:, 0] negative at its trough without touching U. A template whose trough is far from
    that sample (there, W is ~0 of the rebound's sign) comes back as mu U W' = -template."""
    nt0, nt0min = 61, 20
    peak = alignment_sample(nt0min, fix_trough_offset=fix)
    Ka, Kb = _identity_kernels(nt0, peak)
    dWU, W0, iC, iW, w = _rank1_case(nt0, trough=40)  # w[peak] > 0: the rebound's tail
    assert w[peak] > 0
    W, U, mu = template_svd(dWU, W0, iC=iC, iW=iW, Ka=Ka, Kb=Kb, nt0min=nt0min,
                            fix_trough_offset=fix)
    for f in range(iW.size):
        shifted = np.roll(dWU[:, :, f], peak - 40, axis=0)
        np.testing.assert_allclose(_recon(W, U, mu, f), -shifted, rtol=0, atol=1e-9 * mu[f])
        assert W[peak, f, 0] < 0


def test_positive_peak_comes_out_negative():
    """A positive-going template: W[:, 0] is still negative at the alignment sample, and since the
    sign is chosen there before alignment too, U carries the sign (mu U W' = template)."""
    nt0, nt0min = 61, 20
    Ka, Kb = _identity_kernels(nt0, nt0min - 1)
    dWU, W0, iC, iW, _ = _rank1_case(nt0, trough=nt0min - 1)
    W, U, mu = template_svd(-dWU, W0, iC=iC, iW=iW, Ka=Ka, Kb=Kb, nt0min=nt0min,
                            fix_trough_offset=True)
    assert np.all(W[nt0min - 1, :, 0] < 0) and np.all(W[:, :, 0].min(axis=0) < -0.5)
    assert np.all(U[iC[0, iW], np.arange(iW.size), 0] < 0)
    for f in range(iW.size):
        np.testing.assert_allclose(_recon(W, U, mu, f), -dWU[:, :, f], rtol=0, atol=1e-9 * mu[f])


def test_rank3_components_are_orthogonal_and_unit_norm(rng):
    case = _case(rng, 61, 40, 32, 6, 3)
    got = template_svd(case["dWU"], case["W"], iC=case["iC"], iW=case["iW"], Ka=case["Ka"],
                       Kb=case["Kb"], nt0min=20)
    for f in range(6):
        g = got.U[:, f].T @ got.U[:, f]
        assert np.abs(g - np.diag(np.diag(g))).max() < 1e-6
        assert abs(np.trace(g) - 1) < 1e-6


# ---------------------------------------------------------------------------------------------
# Errors and limits

def _good():
    Ka, Kb = get_kernels(nt0=11, nt0min=4)
    return dict(dWU=np.zeros((11, 5, 2)), W=np.zeros((11, 2, 3)), iC=_probe_neighbourhoods(5, 2),
                iW=np.array([0, 4]), Ka=Ka, Kb=Kb, nt0min=4)


@pytest.mark.parametrize("change, error, match", [
    (dict(dWU=np.zeros((11, 5, 2), np.float32)), TypeError, "float64"),
    (dict(W=np.zeros((11, 2, 3), np.float32)), TypeError, "float64"),
    (dict(W=np.zeros((11, 3, 3))), ValueError, "W has shape"),
    (dict(W=np.zeros((11, 2, 0))), ValueError, "W has shape"),
    (dict(iW=np.array([0, 5])), ValueError, "0-based"),
    (dict(iW=np.array([-1, 2])), ValueError, "0-based"),
    (dict(iW=np.array([0.0, 1.0])), TypeError, "integer"),
    (dict(iC=np.full((2, 5), 5)), ValueError, "0-based"),
    (dict(iW=np.array([0, 1, 2])), ValueError, "iW"),
    (dict(Ka=np.zeros((10, 12))), ValueError, "get_kernels"),
    (dict(Kb=np.zeros((11, 11, 9))), ValueError, "get_kernels"),
    (dict(nt0min=11), ParameterError, "nt0min=11"),
    (dict(n_iter=0), ValueError, "n_iter"),
])
def test_bad_inputs(change, error, match):
    with pytest.raises(error, match=match):
        template_svd(**dict(_good(), **change))


def test_fix_allows_nt0min_equal_to_nt0():
    args = dict(_good(), nt0min=11)
    Ka, Kb = get_kernels(nt0=11, nt0min=11)
    out = template_svd(**dict(args, Ka=Ka, Kb=Kb), fix_trough_offset=True)
    assert out.W.shape == (11, 2, 3)


def test_cuda_capacity_limits_are_reported():
    geo = cuda_launch_geometry(nt0=61, nrank=3, nup=10)
    assert geo["power"] == 64 and geo["normalise"] == 64
    assert geo["normalise_shared"] == 8 * (61 * 3 + 10 + 3 + 1)
    with pytest.raises(KilosortError, match="nt0=1025"):
        cuda_launch_geometry(nt0=1025, nrank=3, nup=10)
    with pytest.raises(KilosortError, match="shared memory"):
        cuda_launch_geometry(nt0=1000, nrank=7, nup=10)


def test_registered_and_compiles_with_nvcc():
    assert registered()["template_svd"] == ("cpu", "cuda")
    ok, log = nvcc_compile(cuda_source_path("svdsmall.cu"))
    assert ok, log


# ---------------------------------------------------------------------------------------------
# CUDA vs twin: both avoid FMAs and use IEEE division and sqrt, so they agree bit for bit.

@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES + [(61, 384, 32, 700, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fix", [False, True], ids=["original", "fixed"])
def test_cuda_matches_twin(rng, shape, fix):
    import cupy

    case = _case(rng, *shape)
    case["dWU"][0, case["iC"][0, case["iW"][0]], 0] = np.nan  # NaN path too
    kw = dict(nt0min=_nt0min(shape[0]), fix_trough_offset=fix)
    cpu = template_svd(case["dWU"], case["W"], iC=case["iC"], iW=case["iW"], Ka=case["Ka"],
                       Kb=case["Kb"], **kw)
    gpu = template_svd(cupy.asarray(case["dWU"], order="F"), cupy.asarray(case["W"], order="F"),
                       iC=cupy.asarray(case["iC"]), iW=cupy.asarray(case["iW"]),
                       Ka=cupy.asarray(case["Ka"]), Kb=cupy.asarray(case["Kb"]), **kw)
    _assert_same([a.get() for a in gpu], cpu)


@pytest.mark.gpu
def test_cuda_no_templates_and_few_iterations(rng):
    import cupy

    case = _case(rng, 13, 6, 3, 4, 3)
    for n_iter in (1, 3):
        cpu = template_svd(case["dWU"], case["W"], iC=case["iC"], iW=case["iW"], Ka=case["Ka"],
                           Kb=case["Kb"], nt0min=5, n_iter=n_iter)
        gpu = template_svd(cupy.asarray(case["dWU"]), cupy.asarray(case["W"]),
                           iC=cupy.asarray(case["iC"]), iW=cupy.asarray(case["iW"]),
                           Ka=cupy.asarray(case["Ka"]), Kb=cupy.asarray(case["Kb"]), nt0min=5,
                           n_iter=n_iter)
        _assert_same([a.get() for a in gpu], cpu)
    empty = template_svd(cupy.zeros((13, 6, 0)), cupy.zeros((13, 0, 3)),
                         iC=cupy.asarray(case["iC"]), iW=cupy.zeros(0, np.int32),
                         Ka=cupy.asarray(case["Ka"]), Kb=cupy.asarray(case["Kb"]), nt0min=5)
    assert empty.W.shape == (13, 0, 3) and empty.mu.shape == (0,)
