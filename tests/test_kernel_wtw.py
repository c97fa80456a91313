"""template_cross_correlations (mexWtW2): numba twin vs a literal reference and float64 maths; CUDA vs twin."""
import numpy as np
import pytest

from pykilosort.kernels.registry import cuda_source_path, nvcc_compile, registered
from pykilosort.kernels.wtw import _launch_config, template_cross_correlations


def _wtw_naive(W1, W2, UtU):
    """crossFilter line by line: for lag i < nt0 sum t = 0..i, else t = i-nt0+1..nt0-1, of
    W1[t, a] * W2[t + nt0-i-1, b] in float32 (vectorised over the pairs (a, b)), times UtU."""
    nt0, nfilt = W1.shape
    out = np.zeros((nfilt, nfilt, 2 * nt0 - 1), np.float32)
    for i in range(2 * nt0 - 1):
        x = np.zeros((nfilt, nfilt), np.float32)
        ts = range(i + 1) if i < nt0 else range(i - nt0 + 1, nt0)
        for t in ts:
            x += W1[t][:, None] * W2[t + nt0 - i - 1][None, :]
        out[:, :, i] = x * UtU
    return out


def _wtw_float64(W1, W2, UtU):
    """The same correlations from np.convolve in float64: out[a, b, :] = UtU[a, b] *
    conv(W1[:, a], reversed W2[:, b])."""
    nt0, nfilt = W1.shape
    out = np.empty((nfilt, nfilt, 2 * nt0 - 1))
    for a in range(nfilt):
        for b in range(nfilt):
            out[a, b] = UtU[a, b] * np.convolve(W1[:, a].astype(float), W2[::-1, b].astype(float))
    return out


def _inputs(rng, nt0, nfilt):
    W1 = rng.standard_normal((nt0, nfilt)).astype(np.float32)
    W2 = rng.standard_normal((nt0, nfilt)).astype(np.float32)
    W1 /= np.linalg.norm(W1, axis=0) + 1e-12  # unit templates, as the caller's are
    W2 /= np.linalg.norm(W2, axis=0) + 1e-12
    UtU = rng.uniform(-1, 1, (nfilt, nfilt)).astype(np.float32)
    return np.asfortranarray(W1), np.asfortranarray(W2), np.asfortranarray(UtU)


# (nt0, Nfilt): single sample/filter, ragged against the CUDA 32x32 tiles, several tiles
SHAPES = [(1, 1), (2, 3), (7, 33), (21, 65), (61, 40), (3, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "nt0%d-nfilt%d" % s)
def test_twin_equals_naive_exactly(rng, shape):
    W1, W2, UtU = _inputs(rng, *shape)
    out = template_cross_correlations(W1=W1, W2=W2, UtU=UtU)
    assert out.shape == (shape[1], shape[1], 2 * shape[0] - 1)
    assert out.dtype == np.float32 and out.flags.f_contiguous
    np.testing.assert_array_equal(out, _wtw_naive(W1, W2, UtU))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "nt0%d-nfilt%d" % s)
def test_twin_equals_float64_convolution(rng, shape):
    W1, W2, UtU = _inputs(rng, *shape)
    out = template_cross_correlations(W1=W1, W2=W2, UtU=UtU)
    np.testing.assert_allclose(out, _wtw_float64(W1, W2, UtU), rtol=0, atol=2e-6)


def test_zero_lag_is_the_plain_product_and_swapping_mirrors_lags(rng):
    """Lag nt0-1 is getMeWtW2's (W1' W2) .* UtU; swapping W1, W2 (and UtU') reverses the lags,
    term for term (the same products summed in the same order)."""
    nt0, nfilt = 13, 9
    W1, W2, UtU = _inputs(rng, nt0, nfilt)
    out = template_cross_correlations(W1=W1, W2=W2, UtU=UtU)
    np.testing.assert_allclose(out[:, :, nt0 - 1], (W1.T.astype(float) @ W2) * UtU, atol=2e-6)
    swapped = template_cross_correlations(W1=W2, W2=W1, UtU=np.asfortranarray(UtU.T))
    np.testing.assert_array_equal(swapped, out.transpose(1, 0, 2)[:, :, ::-1])
    # a template against itself at zero lag, with UtU = 1, is its squared norm (1)
    auto = template_cross_correlations(W1=W1, W2=W1, UtU=np.ones((nfilt, nfilt), np.float32))
    np.testing.assert_allclose(np.diagonal(auto[:, :, nt0 - 1]), 1, atol=1e-6)
    assert np.all(auto.max(axis=2).diagonal() == auto[:, :, nt0 - 1].diagonal())


def test_accumulate_sums_like_getMeWtW(rng):
    """getMeWtW: WtW = WtW + mexWtW2(...) over the rank pairs, each a float32 addition."""
    nt0, nfilt, nrank = 11, 21, 3
    W = rng.standard_normal((nt0, nfilt, nrank)).astype(np.float32)
    U = rng.standard_normal((7, nfilt, nrank)).astype(np.float32)
    expected = np.zeros((nfilt, nfilt, 2 * nt0 - 1), np.float32)
    out = np.zeros(expected.shape, np.float32, order="F")
    for i in range(nrank):
        for j in range(nrank):
            UtU = U[:, :, i].T @ U[:, :, j]
            expected = expected + _wtw_naive(W[:, :, i], W[:, :, j], UtU)
            res = template_cross_correlations(W1=W[:, :, i], W2=W[:, :, j], UtU=UtU, out=out,
                                              accumulate=True)
            assert res is out
    np.testing.assert_array_equal(out, expected)


def test_out_overwritten_without_accumulate(rng):
    W1, W2, UtU = _inputs(rng, 5, 4)
    out = np.full((4, 4, 9), 7.0, np.float32, order="F")
    template_cross_correlations(W1=W1, W2=W2, UtU=UtU, out=out)
    np.testing.assert_array_equal(out, _wtw_naive(W1, W2, UtU))


def test_float64_and_c_ordered_inputs_are_cast(rng):
    W1, W2, UtU = _inputs(rng, 9, 6)
    got = template_cross_correlations(W1=np.ascontiguousarray(W1, np.float64),
                                      W2=np.ascontiguousarray(W2), UtU=UtU.astype(np.float64))
    np.testing.assert_array_equal(got, _wtw_naive(W1, W2, UtU))


def test_no_templates():
    out = template_cross_correlations(W1=np.zeros((61, 0), np.float32),
                                      W2=np.zeros((61, 0), np.float32),
                                      UtU=np.zeros((0, 0), np.float32))
    assert out.shape == (0, 0, 121)


def test_bad_inputs(rng):
    W1, W2, UtU = _inputs(rng, 5, 4)
    with pytest.raises(ValueError, match="W1 and W2"):
        template_cross_correlations(W1=W1, W2=W2[:, :3], UtU=UtU)
    with pytest.raises(ValueError, match="W1 and W2"):
        template_cross_correlations(W1=W1[:0], W2=W2[:0], UtU=UtU)
    with pytest.raises(ValueError, match="UtU"):
        template_cross_correlations(W1=W1, W2=W2, UtU=UtU[:3])
    with pytest.raises(ValueError, match="pass out"):
        template_cross_correlations(W1=W1, W2=W2, UtU=UtU, accumulate=True)
    with pytest.raises(ValueError, match="Fortran-ordered float32"):
        template_cross_correlations(W1=W1, W2=W2, UtU=UtU, out=np.zeros((4, 4, 9), np.float32))
    with pytest.raises(ValueError, match="shape"):
        template_cross_correlations(W1=W1, W2=W2, UtU=UtU, out=np.zeros((4, 4, 8), np.float32, order="F"))


@pytest.mark.gpu
def test_cuda_out_must_be_on_the_device(rng):
    import cupy

    W1, W2, UtU = _inputs(rng, 5, 4)
    with pytest.raises(ValueError, match="device"):
        template_cross_correlations(W1=cupy.asarray(W1), W2=cupy.asarray(W2), UtU=cupy.asarray(UtU),
                                    out=np.zeros((4, 4, 9), np.float32, order="F"))


def test_launch_config_fits_shared_memory():
    assert _launch_config(61) == (32, 81)
    assert _launch_config(100) == (32, 100)
    tile, cap = _launch_config(400)
    assert cap == 400 and 2 * tile * cap * 4 <= 48 * 1024 and tile == 8


def test_registered_on_both_devices():
    assert registered()["template_cross_correlations"] == ("cpu", "cuda")


@pytest.mark.nvcc
@pytest.mark.parametrize("defines", [(), (("WTW_TILE", 16), ("WTW_NT0_MAX", 200))])
def test_cuda_source_compiles(defines):
    ok, log = nvcc_compile(cuda_source_path("wtw.cu"), defines=defines)
    assert ok, log


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES + [(61, 32), (61, 64), (61, 300), (100, 37), (200, 50)],
                         ids=lambda s: "nt0%d-nfilt%d" % s)
@pytest.mark.parametrize("accumulate", [False, True])
def test_cuda_equals_twin(rng, shape, accumulate):
    """Explicitly rounded sums on both sides (no FMA): equal bit for bit."""
    import cupy

    W1, W2, UtU = _inputs(rng, *shape)
    n = shape[1]
    start = rng.standard_normal((n, n, 2 * shape[0] - 1)).astype(np.float32)
    cpu = np.asfortranarray(start.copy()) if accumulate else None
    gpu = cupy.asarray(start, order="F") if accumulate else None
    cpu = template_cross_correlations(W1=W1, W2=W2, UtU=UtU, out=cpu, accumulate=accumulate)
    gpu = template_cross_correlations(W1=cupy.asarray(W1), W2=cupy.asarray(W2),
                                      UtU=cupy.asarray(UtU), out=gpu, accumulate=accumulate)
    assert isinstance(gpu, cupy.ndarray) and gpu.flags.f_contiguous
    np.testing.assert_array_equal(gpu.get(), cpu)
