"""template_distances (mexDistances2): numba twin vs a literal re-implementation of the original's
two kernels, edge cases, bad input, CUDA vs twin and nvcc compilation."""
import numba
import numpy as np
import pytest

from pykilosort.kernels.clustering import match_mask
from pykilosort.kernels.distances import template_distances
from pykilosort.kernels.registry import cuda_source_path, nvcc_compile, registered
from pykilosort.neighbours import get_closest_channels

F32 = np.float32


# ------------------------------------------------------------------ slow reference (original's kernels)
def _compute_cost(Ws, W, iMatch, iC, Wh, mus, mu):
    """computeCost: cmax[t, f] for matching pairs (NaN elsewhere: the original leaves garbage)."""
    n_near, n_chan = iC.shape
    n_rank = Ws.shape[0] // n_near
    cmax = np.full((Ws.shape[1], W.shape[1]), np.nan, F32)
    for f in range(W.shape[1]):  # one CUDA block per primary template, threads over all templates
        for t in range(Ws.shape[1]):
            my_chan = Wh[t]
            if not iMatch[my_chan, f]:
                continue
            xsum = F32(0)
            for k in range(n_near):
                this_chan = iC[k, my_chan]
                for j in range(n_rank):
                    xsum = F32(xsum + F32(Ws[j + n_rank * k, t] * W[j + n_rank * this_chan, f]))
            cmax[t, f] = F32(F32(mu[f] * mu[f]) + F32(mus[t] * mus[t])) - F32(F32(F32(2 * mus[t]) * mu[f]) * xsum)
    return cmax


def _best_filter(cmax, iMatch, Wh, mus, unmatched):
    iclust = np.empty(cmax.shape[0], np.int32)
    x = np.empty(cmax.shape[0], F32)
    for t in range(cmax.shape[0]):
        max_running, iclust[t] = F32(mus[t] * mus[t]), unmatched
        for f in range(cmax.shape[1]):
            if iMatch[Wh[t], f] and cmax[t, f] < max_running:
                iclust[t], max_running = f, cmax[t, f]
        x[t] = max_running
    return iclust, x


def mex_distances2_reference(Ws, W, iMatch, iC, Wh, mus, mu, unmatched=0):
    """Inputs as MATLAB passes them (Ws 4-D, Wh/mus (Nfilt, nBatches)); outputs flat like the mex."""
    Ws2 = Ws.reshape(Ws.shape[0] * Ws.shape[1], -1, order="F")
    W2 = W.reshape(-1, W.shape[-1], order="F")
    Wh, mus = Wh.ravel(order="F"), mus.ravel(order="F")
    return _best_filter(_compute_cost(Ws2, W2, iMatch, iC, Wh, mus, mu), iMatch, Wh, mus, unmatched)


# ------------------------------------------------------------------ inputs like clusterSingleBatches'
def neighbours(n_chan, n_near):
    xc, yc = np.tile([0.0, 32.0], n_chan)[:n_chan], np.arange(n_chan) * 20.0
    return get_closest_channels(xc=xc, yc=yc, sigma_mask=30.0, n_closest=n_near)[0]


def make_problem(rng, n_chan, n_near, n_filt, n_batch, *, n_rank=3, primary=0):
    """Ws/mus/Wh as clusterSingleBatches stores them; W, mu, iMatch for one primary batch. Batches
    are noisy copies of a base set, so that true near neighbours exist."""
    iC = neighbours(n_chan, n_near)
    base = rng.standard_normal((n_rank, n_near, n_filt))
    Ws = base[..., None] + 0.5 * rng.standard_normal((n_rank, n_near, n_filt, n_batch))
    Ws = (Ws / (1e-5 + np.sqrt((Ws ** 2).sum(axis=(0, 1), keepdims=True)))).astype(F32)
    Wh = np.repeat(rng.integers(0, n_chan, n_filt)[:, None], n_batch, axis=1)
    Wh[rng.random(Wh.shape) < 0.2] = rng.integers(0, n_chan)  # some templates moved channel
    Wh[0, :] = 0  # first and last channel
    Wh[-1, :] = n_chan - 1
    mus = (10 + 5 * rng.random((n_filt, n_batch))).astype(F32)
    Wh0, mu = Wh[:, primary], mus[:, primary].copy()
    W = np.zeros((n_rank, n_chan, n_filt), F32)  # the primary batch scattered onto all channels
    for t in range(n_filt):
        W[:, iC[:, Wh0[t]], t] = Ws[:, :, t, primary]
    iMatch = match_mask(iC=iC, best_channels=Wh0)
    return dict(Ws=Ws, W=W, iMatch=iMatch, iC=iC, Wh=Wh, mus=mus, mu=mu)


# (n_chan, n_near, n_filt, n_batch): tiny, ragged (not multiples of 256 templates), realistic 32 ch.
SHAPES = [(1, 1, 1, 1), (2, 2, 1, 3), (3, 3, 2, 2), (7, 5, 3, 30), (12, 5, 6, 43), (32, 17, 16, 20)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("unmatched", [0, -1])
def test_twin_equals_reference(rng, shape, unmatched):
    p = make_problem(rng, *shape)
    got = template_distances(**p, unmatched=unmatched)
    assert got.ds.shape == got.iclust.shape == shape[2:] and got.iclust.dtype == np.int32
    iclust, ds = mex_distances2_reference(**p, unmatched=unmatched)
    np.testing.assert_array_equal(got.iclust.ravel(order="F"), iclust)
    np.testing.assert_array_equal(got.ds.ravel(order="F"), ds)


def test_primary_batch_finds_itself(rng):
    """Against its own batch every template's nearest is itself, at distance ~0."""
    p = make_problem(rng, 32, 17, 16, 5, primary=3)
    r = template_distances(**p)
    np.testing.assert_array_equal(r.iclust[:, 3], np.arange(16))
    assert np.abs(r.ds[:, 3]).max() < 1e-3 * p["mus"].max() ** 2
    p["iMatch"][p["Wh"][5, 3], 5] = False  # template 5 may not take templates on its own channel
    r = template_distances(**p)
    assert r.iclust[5, 3] != 5 and r.ds[5, 3] > 1e-2 * p["mus"].min() ** 2


def test_float64_semantics(rng):
    """Independent of the summation order: ds agrees with float64 numpy to float32 rounding of
    the terms (~1e-7 * 2 mus mu) on min(mus^2, min_f mu_f^2 + mus^2 - 2 mus mu_f <Ws_t, W_f>),
    the inner product taken on template t's neighbourhood only, over f matching its channel."""
    p = make_problem(rng, 32, 17, 16, 20)
    r = template_distances(**p)
    Ws = p["Ws"].reshape(51, -1, order="F").astype(np.float64)
    Wh, mus = p["Wh"].ravel(order="F"), p["mus"].ravel(order="F").astype(np.float64)
    W, mu = p["W"].astype(np.float64), p["mu"].astype(np.float64)
    expected = mus ** 2
    for t in range(Ws.shape[1]):
        dense = np.zeros((3, 32))
        dense[:, p["iC"][:, Wh[t]]] = Ws[:, t].reshape(3, 17, order="F")
        f = np.flatnonzero(p["iMatch"][Wh[t]])
        d = mu[f] ** 2 + mus[t] ** 2 - 2 * mus[t] * mu[f] * np.einsum("ij,ijf->f", dense, W[:, :, f])
        expected[t] = min(expected[t], d.min(initial=np.inf))
    np.testing.assert_allclose(r.ds.ravel(order="F"), expected, rtol=0, atol=2e-6 * mus.max() ** 2)


def test_unmatched_and_ties(rng):
    p = make_problem(rng, 12, 5, 4, 6)
    p["W"][:, :, 2] = p["W"][:, :, 1]  # identical primary templates: the first (1) wins
    p["mu"][2] = p["mu"][1]
    p["iMatch"][:, 2] = p["iMatch"][:, 1]
    p["Wh"][3, :] = 5
    p["iMatch"][5] = False  # templates centred on channel 5 match nothing
    v20, v25 = template_distances(**p), template_distances(**p, unmatched=-1)
    np.testing.assert_array_equal(v20.ds, v25.ds)
    none = v25.iclust == -1
    assert none[3].all() and (v20.iclust[none] == 0).all()
    np.testing.assert_array_equal(v20.ds[none], p["mus"][none] ** 2)
    np.testing.assert_array_equal(v20.iclust[~none], v25.iclust[~none])
    assert (v20.iclust == 1).any() and not (v20.iclust == 2).any()


def test_array_forms(rng):
    p = make_problem(rng, 12, 5, 6, 7)
    ref = template_distances(**p)
    flat = template_distances(**dict(p, Ws=p["Ws"].reshape(15, -1, order="F"), W=p["W"].reshape(36, 6, order="F"),
                                     Wh=p["Wh"].ravel(order="F").astype(np.int64), mus=p["mus"].ravel(order="F")))
    assert flat.ds.shape == (42,)
    np.testing.assert_array_equal(flat.ds, ref.ds.ravel(order="F"))
    np.testing.assert_array_equal(flat.iclust, ref.iclust.ravel(order="F"))
    three = template_distances(**dict(p, Ws=p["Ws"].reshape(3, 5, 42, order="F"), mu=p["mu"][None]))
    np.testing.assert_array_equal(three.ds.ravel(order="F"), flat.ds)


def test_no_templates(rng):
    p = make_problem(rng, 7, 5, 3, 1)
    p.update(Ws=np.zeros((3, 5, 0), F32), Wh=np.zeros(0, np.int32), mus=np.zeros(0, F32))
    r = template_distances(**p)
    assert r.iclust.shape == r.ds.shape == (0,)


def test_deterministic_across_thread_counts(rng):
    p = make_problem(rng, 32, 17, 16, 20)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = template_distances(**p)
        numba.set_num_threads(before)
        two = template_distances(**p)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.ds, two.ds)
    np.testing.assert_array_equal(one.iclust, two.iclust)


@pytest.mark.parametrize("change, error, match", [
    (dict(Wh=lambda p: p["Wh"] + 1), ValueError, "0-based"),
    (dict(iC=lambda p: p["iC"] - 1), ValueError, "0-based"),
    (dict(Ws=lambda p: p["Ws"].astype(np.float64)), TypeError, "float32"),
    (dict(mus=lambda p: p["mus"][:, :-1]), ValueError, "templates"),
    (dict(Wh=lambda p: p["Wh"][:, :-1]), ValueError, "templates"),
    (dict(mu=lambda p: p["mu"][:-1]), ValueError, "mu"),
    (dict(W=lambda p: p["W"][:2]), ValueError, "PCs"),
    (dict(iMatch=lambda p: p["iMatch"][:, :-1]), ValueError, "iMatch"),
])
def test_bad_input_is_reported(rng, change, error, match):
    p = make_problem(rng, 7, 5, 3, 4)
    p.update({k: f(p) for k, f in change.items()})
    with pytest.raises(error, match=match):
        template_distances(**p)
    with pytest.raises(ValueError, match="unmatched"):
        template_distances(**make_problem(rng, 7, 5, 3, 4), unmatched=2)


def test_registered_on_both_devices():
    assert registered()["template_distances"] == ("cpu", "cuda")


@pytest.mark.nvcc
@pytest.mark.parametrize("defines", [(), (("DIST_THREADS", 96),)])
def test_cuda_source_compiles(defines):
    ok, log = nvcc_compile(cuda_source_path("distances.cu"), defines=defines)
    assert ok, log


# ------------------------------------------------------------------ GPU
GPU_SHAPES = SHAPES + [(64, 17, 32, 100), (384, 17, 192, 300)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
@pytest.mark.parametrize("unmatched", [0, -1])
def test_cuda_equals_twin(rng, shape, unmatched):
    """Exact: the kernel evaluates the same float32 operations in the same order as the twin, with
    __fmul_rn/__fadd_rn so that nvcc cannot contract them into FMAs (numba does not either), and
    no reduction across threads. Any difference is a bug, not rounding."""
    import cupy

    p = make_problem(rng, *shape)
    cpu = template_distances(**p, unmatched=unmatched)
    gpu = template_distances(**{k: cupy.asarray(v) for k, v in p.items()}, unmatched=unmatched)
    assert isinstance(gpu.ds, cupy.ndarray) and gpu.ds.shape == cpu.ds.shape
    np.testing.assert_array_equal(gpu.iclust.get(), cpu.iclust)
    np.testing.assert_array_equal(gpu.ds.get(), cpu.ds)


@pytest.mark.gpu
def test_cuda_no_templates(rng):
    import cupy

    p = make_problem(rng, 7, 5, 3, 1)
    p.update(Ws=np.zeros((3, 5, 0), F32), Wh=np.zeros(0, np.int32), mus=np.zeros(0, F32))
    r = template_distances(**{k: cupy.asarray(v) for k, v in p.items()})
    assert r.ds.shape == (0,) and isinstance(r.ds, cupy.ndarray)
