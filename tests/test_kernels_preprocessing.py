"""Fused preprocessing kernels: numba twins vs slow references on tiny and ragged shapes; CUDA vs twin."""
import numpy as np
import pytest

from pykilosort.kernels import common_reference, count_crossings, round_int16

SHAPES = [(1, 1), (5, 2), (64, 3), (1000, 7), (4097, 33)]


def _common_reference_naive(buff, chan_map, car):
    x = buff[:, chan_map].astype(np.float32)
    x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    if car:
        x = x - np.median(x, axis=1, keepdims=True).astype(np.float32)
    return x


def _count_crossings_naive(datr, spk_th, nt0, NT, half):
    """get_good_channels' detection: z-score, my_min over +-half, threshold, edge exclusion."""
    std = datr.astype(np.float64).std(axis=0).astype(np.float32)
    counts = np.zeros(datr.shape[1], np.int64)
    for c in range(datr.shape[1]):
        if std[c] == 0:
            continue
        z = datr[:, c] / std[c]
        padded = np.concatenate([np.full(half, np.inf, np.float32), z, np.full(half, np.inf, np.float32)])
        zmin = np.array([padded[t: t + 2 * half + 1].min() for t in range(z.size)], np.float32)
        for t in range(z.size):
            if z[t] < zmin[t] + np.float32(1e-3) and z[t] < np.float32(spk_th) and nt0 <= t + 1 <= NT - nt0:
                counts[c] += 1
    return counts


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("car", [True, False])
def test_common_reference_equals_naive(rng, shape, car):
    n, nchan = shape
    buff = rng.integers(-3000, 3000, (n, nchan + 2)).astype(np.int16)
    chan_map = rng.permutation(nchan + 2)[:nchan]
    out = common_reference(buff, chan_map, car=car)
    assert out.flags.f_contiguous and out.dtype == np.float32
    np.testing.assert_array_equal(out, _common_reference_naive(buff, chan_map, car))


@pytest.mark.parametrize("shape", [(200, 3), (1000, 7), (3001, 12)])
@pytest.mark.parametrize("half", [1, 30])
def test_count_crossings_equals_naive(rng, shape, half):
    datr = (rng.standard_normal(shape) * 10).astype(np.float32)
    k = max(4, datr.size // 100)  # sparse spikes, so they stand out of the z-scored noise
    datr[rng.integers(0, shape[0], k), rng.integers(0, shape[1], k)] -= 90
    datr[:, 1] = 0  # a flat channel
    datr[50:52, 0] = -120  # a two-sample plateau: both samples are minima (to 1e-3)
    datr[[19, 20, shape[0] - 21, shape[0] - 20], 2] = -120  # at and beyond the edge exclusion
    got = count_crossings(datr, spk_th=-4.0, nt0=20, NT=shape[0], half_window=half)
    ref = _count_crossings_naive(datr, -4.0, 20, shape[0], half)
    assert ref.sum() >= 3 and ref[1] == 0
    np.testing.assert_array_equal(got, ref)


def test_round_int16_like_matlab():
    x = np.array([[0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, -0.49999997, 40000.2, -40000.0, np.nan,
                   32766.5, -32767.5, 3.4999998, -0.0]], np.float32).T
    expected = [1, -1, 2, 3, -3, 0, 0, 32767, -32768, 0, 32767, -32768, 3, 0]
    np.testing.assert_array_equal(round_int16(x).ravel(), expected)
    np.testing.assert_array_equal(round_int16(np.asfortranarray(np.tile(x, (1, 3))))[:, 2], expected)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES)
def test_cuda_kernels_match_twins(rng, shape):
    import cupy

    n, nchan = shape
    buff = rng.integers(-3000, 3000, (n, nchan + 2)).astype(np.int16)
    chan_map = rng.permutation(nchan + 2)[:nchan]
    np.testing.assert_allclose(common_reference(cupy.asarray(buff), chan_map).get(),
                               common_reference(buff, chan_map), atol=1e-3)
    datr = (rng.standard_normal(shape) * 10).astype(np.float32)
    np.testing.assert_array_equal(count_crossings(cupy.asarray(datr), spk_th=-2.0, nt0=2, NT=n),
                                  count_crossings(datr, spk_th=-2.0, nt0=2, NT=n))
    x = (rng.standard_normal(shape) * 5e4).astype(np.float32)
    np.testing.assert_array_equal(round_int16(cupy.asarray(x)).get(), round_int16(x))


def test_median_equals_numpy(rng):
    from pykilosort.kernels.preprocessing import _median

    for n in [1, 2, 3, 4, 7, 8, 383, 384]:
        for _ in range(50):
            v = rng.standard_normal(n).astype(np.float32)
            if rng.random() < 0.3:  # ties
                v = np.round(v).astype(np.float32)
            assert _median(v, np.empty(n, np.float32)) == np.median(v), (n, v)


def test_bracketed_median_equals_numpy_on_both_paths(rng):
    """The subsample bracket holds the median, or misses it (the full search): both exact."""
    from pykilosort.kernels.preprocessing import _SAMPLE, _median_bracketed

    scratch, sample = np.empty(400, np.float32), np.empty(_SAMPLE, np.float32)
    for n in [4 * _SAMPLE - 1, 4 * _SAMPLE, 85, 383, 384]:
        for trial in range(60):
            v = (rng.standard_normal(n) * 20).astype(np.float32)
            if trial % 3 == 1:  # ties, as int16 samples minus channel means have
                v = np.round(v).astype(np.float32)
            if trial % 3 == 2:  # the subsample is the largest values: the bracket misses
                v = np.sort(v)
                stride = n // _SAMPLE
                top = v[-_SAMPLE:].copy()
                v = np.delete(v, np.arange(n - _SAMPLE, n))
                v = np.insert(v, np.arange(_SAMPLE) * stride - np.arange(_SAMPLE), top)
            assert _median_bracketed(v, scratch, sample) == np.median(v), (n, trial)


def _local_whitening_like(rng, nchan, n_range):
    """A (nchan, nchan) matrix with n_range non-zero weights per column, near the diagonal."""
    w = np.zeros((nchan, nchan))
    for j in range(nchan):
        rows = np.argsort(np.abs(np.arange(nchan) - j), kind="stable")[:n_range]
        w[rows, j] = rng.standard_normal(n_range)
    return w


def test_sparse_whitening_equals_sequential_sum_and_dense_product(rng):
    from pykilosort.kernels.preprocessing import sparse_whitening, whiten_sparse

    wrot = _local_whitening_like(rng, 96, 12)
    datr = np.asfortranarray(rng.standard_normal((500, 96)) * 50, np.float32)
    cols = sparse_whitening(wrot)
    assert cols is not None and cols.count.tolist() == [12] * 96
    got = whiten_sparse(datr, cols=cols)
    assert got.flags.f_contiguous and got.dtype == np.float32
    w32 = wrot.astype(np.float32)
    ref = np.zeros_like(got)
    for j in range(96):  # row order, float32 multiply then add
        for r in np.flatnonzero(w32[:, j]):
            ref[:, j] += w32[r, j] * datr[:, r]
    np.testing.assert_array_equal(got, ref)
    dense = datr.astype(np.float64) @ w32.astype(np.float64)
    np.testing.assert_allclose(got, dense, rtol=0, atol=1e-5 * np.abs(dense).max())


def test_sparse_whitening_only_for_mostly_zero_matrices(rng):
    from pykilosort.kernels.preprocessing import sparse_whitening

    assert sparse_whitening(_local_whitening_like(rng, 384, 32)) is not None  # 1/12 non-zero
    assert sparse_whitening(_local_whitening_like(rng, 128, 32)) is None      # 1/4: BLAS
    assert sparse_whitening(rng.standard_normal((64, 64))) is None
