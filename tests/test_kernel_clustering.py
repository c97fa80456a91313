"""cluster_projections (mexClustering2): numba twin vs a literal re-implementation of the original's
four kernels, edge cases, bad input, a k-means run, CUDA vs twin and nvcc compilation."""
import numba
import numpy as np
import pytest

from pykilosort.kernels.clustering import ClusteringResult, cluster_projections, match_mask
from pykilosort.kernels.registry import cuda_source_path, nvcc_compile, registered
from pykilosort.neighbours import get_closest_channels

F32 = np.float32


# ------------------------------------------------------------------ slow reference (original's kernels)
def _compute_cost(uproj, W, mu, call, iMatch, iC, lam):
    """computeCost: cmax[s, f] for matching pairs (NaN elsewhere: the original leaves garbage)."""
    n_near, n_chan = iC.shape
    n_rank = uproj.shape[0] // n_near
    cmax = np.full((uproj.shape[1], W.shape[1]), np.nan, F32)
    for f in range(W.shape[1]):  # one CUDA block per template, threads over spikes
        for s in range(uproj.shape[1]):
            my_chan = call[s]
            if not iMatch[my_chan, f]:
                continue
            xsum = F32(0)
            for k in range(n_near):
                for j in range(n_rank):
                    this_chan = iC[k, my_chan]
                    xsum = F32(xsum + F32(uproj[j + n_rank * k, s] * W[j + n_rank * this_chan, f]))
            with np.errstate(divide="ignore", invalid="ignore"):
                Ci = F32(np.fmax(F32(0), xsum) + F32(lam / mu[f]))  # fmaxf(0, NaN) = 0
                cmax[s, f] = F32(F32(Ci * Ci) / F32(F32(1) + F32(lam / F32(mu[f] * mu[f])))) - lam
    return cmax


def _best_filter(cmax, call, iMatch, unassigned):
    iclust = np.empty(cmax.shape[0], np.int32)
    dx = np.empty(cmax.shape[0], F32)
    for s in range(cmax.shape[0]):
        max_running, iclust[s] = F32(0), unassigned
        for f in range(cmax.shape[1]):
            if iMatch[call[s], f] and cmax[s, f] > max_running:
                iclust[s], max_running = f, cmax[s, f]
        dx[s] = max_running
    return iclust, dx


def _average_snips_v2(uproj, call, iC, iclust, n_filt):
    n_near, n_chan = iC.shape
    n_rank = uproj.shape[0] // n_near
    dWU = np.zeros((n_rank * n_chan, n_filt), F32)
    for f in range(n_filt):  # one thread per template, spikes in order
        for s in range(uproj.shape[1]):
            if iclust[s] == f:
                for k in range(n_near):
                    for j in range(n_rank):
                        row = j + n_rank * iC[k, call[s]]
                        dWU[row, f] = F32(dWU[row, f] + uproj[j + n_rank * k, s])
    return dWU


def mex_clustering2_reference(uproj, W, mu, call, iMatch, iC, lam=0.0, unassigned=0):
    cmax = _compute_cost(uproj, W, mu, call, iMatch, iC, F32(lam))
    iclust, dx = _best_filter(cmax, call, iMatch, unassigned)
    dWU = _average_snips_v2(uproj, call, iC, iclust, W.shape[1])
    nsp = np.array([np.count_nonzero(iclust == f) for f in range(W.shape[1])], np.int32)
    return dWU, iclust, dx, nsp, cmax


# ------------------------------------------------------------------ inputs like clusterSingleBatches'
def neighbours(n_chan, n_near):
    xc, yc = np.tile([0.0, 32.0], n_chan)[:n_chan], np.arange(n_chan) * 20.0
    return get_closest_channels(xc=xc, yc=yc, sigma_mask=30.0, n_closest=n_near)[0]


def init_templates(uproj, call, iC, n_filt, rng):
    """initializeWdata2: templates from random spikes, unit-normalised; best channel from PC 1."""
    n_near, n_chan = iC.shape
    n_rank = uproj.shape[0] // n_near
    W = np.zeros((n_rank, n_chan, n_filt), F32)
    for t, s in enumerate(rng.integers(0, max(uproj.shape[1], 1), n_filt)):
        if uproj.shape[1]:
            W[:, iC[:, call[s]], t] = uproj[:, s].reshape(n_rank, n_near, order="F")
    W = W.reshape(n_rank * n_chan, n_filt, order="F")
    mu = np.sqrt((W ** 2).sum(axis=0)).astype(F32)
    W = (W / (F32(1e-5) + mu)).astype(F32)
    best = np.argmax(W[0::n_rank] ** 2, axis=0)
    return np.asfortranarray(W), mu, best


def make_problem(rng, n_chan, n_near, n_filt, n_spikes, *, n_rank=3, dead=True):
    iC = neighbours(n_chan, n_near)
    call = rng.integers(0, n_chan, n_spikes)
    if n_spikes >= 2:  # spikes on the first and last channel
        call[:2] = 0, n_chan - 1
    uproj = np.asfortranarray(rng.standard_normal((n_rank * n_near, n_spikes)) * 5, F32)
    W, mu, best = init_templates(uproj, call, iC, n_filt, rng)
    if dead and n_filt > 1:  # an emptied cluster: dWU = 0 gives mu = 0 and W = 0
        W[:, 1], mu[1] = 0, 0
    iMatch = match_mask(iC=iC, best_channels=best)
    return dict(uproj=uproj, W=W, mu=mu, call=call, iMatch=iMatch, iC=iC)


# (n_chan, n_near, n_filt, n_spikes): tiny, ragged (not multiples of 64 or 256), realistic 32 ch.
SHAPES = [(1, 1, 1, 1), (2, 2, 1, 3), (3, 3, 2, 2), (7, 5, 3, 65), (12, 5, 6, 257), (32, 17, 16, 300)]


def assert_results_equal(got, ref):
    for name, a, b in zip(ClusteringResult._fields, got, ref):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("lam", [0.0, 10.0])
@pytest.mark.parametrize("unassigned", [0, -1])
def test_twin_equals_reference(rng, shape, lam, unassigned):
    p = make_problem(rng, *shape)
    got = cluster_projections(**p, lam=lam, unassigned=unassigned, return_costs=True)
    assert got.dWU.shape == (3 * shape[0], shape[2]) and got.dWU.flags.f_contiguous
    assert got.dV.shape == (shape[3], shape[2]) and got.iclust.dtype == np.int32
    assert_results_equal(got, mex_clustering2_reference(**p, lam=lam, unassigned=unassigned))


def test_results_without_costs_are_the_same(rng):
    p = make_problem(rng, 12, 5, 6, 257)
    full = cluster_projections(**p, return_costs=True)
    short = cluster_projections(**p)
    assert short.dV is None
    assert_results_equal(short[:4], full[:4])


def test_float64_semantics(rng):
    """Independent of the summation order: costs and sums agree with float64 numpy to ~1e-5."""
    p = make_problem(rng, 32, 17, 16, 300, dead=False)
    r = cluster_projections(**p, return_costs=True)
    up, W = p["uproj"].astype(np.float64), p["W"].astype(np.float64)
    iC, call = p["iC"], p["call"]
    dense = np.zeros((3, 32, up.shape[1]))  # each spike scattered onto all channels
    for s in range(up.shape[1]):
        dense[:, iC[:, call[s]], s] = up[:, s].reshape(3, 17, order="F")
    proj = dense.reshape(96, -1, order="F").T @ W
    cost = np.where(p["iMatch"][call], np.maximum(proj, 0) ** 2, np.nan)
    np.testing.assert_allclose(r.dV, cost, rtol=1e-5, atol=1e-5 * np.nanmax(cost))
    onehot = (r.iclust[:, None] == np.arange(16)).astype(np.float64)
    np.testing.assert_allclose(r.dWU, dense.reshape(96, -1, order="F") @ onehot, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(r.nsp, onehot.sum(axis=0))


def test_unassigned_spikes_go_to_template_zero(rng):
    """A spike that matches no template (or only with cost <= 0) lands in template 0 with
    dx = 0, as in the original; unassigned=-1 leaves it out of dWU and nsp."""
    p = make_problem(rng, 12, 5, 6, 40, dead=False)
    p["iMatch"][5] = False  # no template may take spikes centred on channel 5
    p["call"][:3] = 5
    p["uproj"][:, 3] = 0  # projection 0: cost 0 is not > 0
    p["call"][3] = 0
    legacy = cluster_projections(**p)
    excluded = cluster_projections(**p, unassigned=-1)
    lost = excluded.iclust == -1
    assert lost[:4].all() and (legacy.iclust[lost] == 0).all() and (legacy.dx[lost] == 0).all()
    assert legacy.nsp[0] == excluded.nsp[0] + lost.sum()
    assert (legacy.nsp[1:] == excluded.nsp[1:]).all()
    assert not np.array_equal(legacy.dWU[:, 0], excluded.dWU[:, 0])


def test_dead_template_never_wins_and_ties_go_to_the_first(rng):
    p = make_problem(rng, 7, 5, 4, 80, dead=False)
    p["W"][:, 2] = p["W"][:, 1]  # identical templates with identical norms: template 1 wins
    p["mu"][2] = p["mu"][1]
    p["iMatch"][:, 2] = p["iMatch"][:, 1]
    p["W"][:, 3], p["mu"][3] = 0, 0  # dead: NaN costs, never chosen
    p["iMatch"][:, 3] = True
    r = cluster_projections(**p, return_costs=True)
    assert np.isnan(r.dV[:, 3]).all() and r.nsp[3] == 0 and (r.dWU[:, 3] == 0).all()
    assert r.nsp[2] == 0 and r.nsp[1] > 0


def test_no_spikes():
    p = make_problem(np.random.default_rng(0), 7, 5, 3, 0)
    r = cluster_projections(**p, return_costs=True)
    assert r.iclust.shape == (0,) and r.dx.shape == (0,) and r.dV.shape == (0, 3)
    assert (r.dWU == 0).all() and r.dWU.shape == (21, 3) and (r.nsp == 0).all()


def test_accepts_3d_arrays_and_any_integer_dtype(rng):
    p = make_problem(rng, 12, 5, 6, 50)
    ref = cluster_projections(**p)
    q = dict(p, uproj=p["uproj"].reshape(3, 5, 50, order="F"), W=p["W"].reshape(3, 12, 6, order="F"),
             mu=p["mu"][None, :], call=p["call"].astype(np.uint16), iC=p["iC"].astype(np.int32),
             iMatch=p["iMatch"].astype(np.uint8))
    assert_results_equal(cluster_projections(**q), ref)


def test_deterministic_across_thread_counts(rng):
    p = make_problem(rng, 32, 17, 16, 300)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = cluster_projections(**p, return_costs=True)
        numba.set_num_threads(before)
        assert_results_equal(cluster_projections(**p, return_costs=True), one)
    finally:
        numba.set_num_threads(before)


def test_match_mask_is_the_matlab_expression(rng):
    iC = neighbours(12, 5)
    best = rng.integers(0, 12, 7)
    # MATLAB: sq(min(abs(single(iC) - reshape(Wheights, 1, 1, [])), [], 1)) < .1 (1-based both)
    matlab = np.min(np.abs((iC + 1).astype(F32)[:, :, None] - (best + 1)[None, None, :]), axis=0) < 0.1
    np.testing.assert_array_equal(match_mask(iC=iC, best_channels=best), matlab)


def test_kmeans_iterations_find_the_clusters(rng):
    """clusterSingleBatches' 10 iterations on 4 well separated clusters: no template mixes them."""
    n_chan, n_near, n_filt = 16, 5, 8
    iC = neighbours(n_chan, n_near)
    truth = np.repeat(np.arange(4), 60)
    call = np.array([2, 6, 10, 14])[truth]
    shapes = np.abs(rng.standard_normal((15, 4)))
    uproj = np.asfortranarray(shapes[:, truth] * 20 + rng.standard_normal((15, truth.size)), F32)
    W, mu, best = init_templates(uproj, call, iC, n_filt, np.random.default_rng(3))
    for _ in range(10):
        r = cluster_projections(uproj=uproj, W=W, mu=mu, call=call,
                                iMatch=match_mask(iC=iC, best_channels=best), iC=iC)
        dWU = r.dWU / (F32(1e-5) + r.nsp.astype(F32))
        mu = np.sqrt((dWU ** 2).sum(axis=0)).astype(F32)
        W = np.asfortranarray(dWU / (F32(1e-5) + mu), F32)
        best = np.argmax(W[0::3] ** 2, axis=0)
    for f in np.unique(r.iclust):
        assert np.unique(truth[r.iclust == f]).size == 1
    assert all(r.dx > 0)


@pytest.mark.parametrize("change, error, match", [
    (dict(call=lambda p: p["call"] + 1), ValueError, "0-based"),
    (dict(iC=lambda p: p["iC"] + 1), ValueError, "0-based"),
    (dict(iC=lambda p: np.vstack([p["iC"][:1], p["iC"][:1]])), ValueError, "distinct"),
    (dict(uproj=lambda p: p["uproj"].astype(np.float64)), TypeError, "float32"),
    (dict(call=lambda p: p["call"].astype(F32)), TypeError, "integer"),
    (dict(uproj=lambda p: p["uproj"][:-1]), ValueError, "multiple"),
    (dict(W=lambda p: p["W"][:-3]), ValueError, "multiple|PCs"),
    (dict(mu=lambda p: p["mu"][:-1]), ValueError, "mu"),
    (dict(iMatch=lambda p: p["iMatch"][:-1]), ValueError, "iMatch"),
    (dict(call=lambda p: p["call"][:-1]), ValueError, "call"),
])
def test_bad_input_is_reported(rng, change, error, match):
    p = make_problem(rng, 7, 5, 3, 20)
    p.update({k: f(p) for k, f in change.items()})
    with pytest.raises(error, match=match):
        cluster_projections(**p)


def test_bad_options():
    p = make_problem(np.random.default_rng(0), 7, 5, 3, 5)
    with pytest.raises(ValueError, match="unassigned"):
        cluster_projections(**p, unassigned=1)


def test_registered_on_both_devices():
    assert registered()["cluster_projections"] == ("cpu", "cuda")


@pytest.mark.nvcc
@pytest.mark.parametrize("defines", [(), (("CLUSTER_THREADS", 96), ("CLUSTER_AVG_THREADS", 32))])
def test_cuda_source_compiles(defines):
    ok, log = nvcc_compile(cuda_source_path("clustering.cu"), defines=defines)
    assert ok, log


# ------------------------------------------------------------------ GPU
GPU_SHAPES = SHAPES + [(64, 17, 32, 5000), (384, 17, 192, 20000)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
@pytest.mark.parametrize("lam, unassigned", [(0.0, 0), (10.0, -1)])
def test_cuda_equals_twin(rng, shape, lam, unassigned):
    """Exact: both devices evaluate the same float32 operations in the same order (the kernel
    uses __fmul_rn/__fadd_rn/__fdiv_rn, so nvcc cannot contract them into FMAs; numba does not
    contract either), every dWU element is summed in spike order on both, and nsp is an integer
    count. Any difference is a bug, not rounding."""
    import cupy

    p = make_problem(rng, *shape)
    cpu = cluster_projections(**p, lam=lam, unassigned=unassigned, return_costs=True)
    gpu = cluster_projections(**{k: cupy.asarray(v) for k, v in p.items()}, lam=lam,
                              unassigned=unassigned, return_costs=True)
    assert isinstance(gpu.dWU, cupy.ndarray) and gpu.dWU.flags.f_contiguous
    assert_results_equal([cupy.asnumpy(a) for a in gpu], cpu)


@pytest.mark.gpu
def test_cuda_no_spikes_and_no_costs(rng):
    import cupy

    p = {k: cupy.asarray(v) for k, v in make_problem(rng, 7, 5, 3, 0).items()}
    r = cluster_projections(**p)
    assert r.dV is None and r.iclust.shape == (0,) and int(r.nsp.sum()) == 0
    assert not bool(r.dWU.any())
