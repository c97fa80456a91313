"""isolated_peaks_new, getClosestChannels and getKernels against slow literal re-implementations.

Each reference follows the MATLAB text with explicit loops and 1-based indices, converting to
0-based only at the end, so it shares no code (and few ideas) with the vectorised port.
"""
import math

import numpy as np
import pytest

from pykilosort.neighbours import get_closest_channels
from pykilosort.peaks import isolated_peaks_new, running_count, running_min
from pykilosort.upsampling import get_kernels, matlab_linspace


# ------------------------------------------------------------------ isolated_peaks_new
def _window(i, half, n):
    """1-based inclusive window i-half..i+half clipped to 1..n (padding never wins a min/sum)."""
    return max(1, i - half), min(n, i + half)


def _isolated_peaks_reference(S1, *, spk_th, nt0, loc_range=(5, 4), long_range=(30, 6)):
    S1 = np.asarray(S1, np.float32)
    NT, nchan = S1.shape
    peaks = np.zeros((NT, nchan), np.float32)
    for t in range(1, NT + 1):
        for c in range(1, nchan + 1):
            t0, t1 = _window(t, loc_range[0], NT)
            c0, c1 = _window(c, loc_range[1], nchan)
            smin = min(float(v) for v in S1[t0 - 1:t1, c0 - 1:c1].ravel())
            v = S1[t - 1, c - 1]
            local = v < np.float32(smin) + np.float32(1e-3)
            peaks[t - 1, c - 1] = 1.0 if (local and v < np.float32(spk_th)) else 0.0
    out = np.zeros((NT, nchan), np.float32)
    for t in range(1, NT + 1):
        for c in range(1, nchan + 1):
            t0, t1 = _window(t, long_range[0], NT)
            c0, c1 = _window(c, long_range[1], nchan)
            count = int(peaks[t0 - 1:t1, c0 - 1:c1].sum())
            keep = 1.0 if count < 1.2 else 0.0
            out[t - 1, c - 1] = peaks[t - 1, c - 1] * keep * S1[t - 1, c - 1]
    for t in list(range(1, nt0 + 1)) + list(range(NT - nt0, NT + 1)):
        if 1 <= t <= NT:
            out[t - 1, :] = 0
    rows, cols, mus = [], [], []
    for c in range(1, nchan + 1):        # column-major find
        for t in range(1, NT + 1):
            if out[t - 1, c - 1] != 0:
                rows.append(t)
                cols.append(c)
                mus.append(-out[t - 1, c - 1])
    return np.array(rows, np.int64) - 1, np.array(cols, np.int64) - 1, np.array(mus, np.float32)


def _assert_same_peaks(got, ref):
    row, col, mu = got
    assert row.dtype == np.int64 and col.dtype == np.int64 and mu.dtype == np.float32
    np.testing.assert_array_equal(row, ref[0])
    np.testing.assert_array_equal(col, ref[1])
    np.testing.assert_array_equal(mu, ref[2])


def _batch_with_spikes(rng, NT, nchan, n_spikes):
    """Unit noise plus negative bumps (trough, and 60% of it on the next sample and channel),
    rounded to quarter steps so that exact ties occur inside the windows."""
    S1 = rng.standard_normal((NT, nchan)).astype(np.float32)
    for _ in range(n_spikes):
        t, c = rng.integers(0, NT - 1), rng.integers(0, nchan)
        amp = rng.uniform(6, 12)
        S1[t, c] -= amp
        S1[t + 1, c] -= 0.6 * amp
        S1[t, (c + 1) % nchan] -= 0.6 * amp
    return np.round(S1 * 4) / 4


@pytest.mark.parametrize("shape, n_spikes, kw", [
    ((700, 13), 10, {}),
    ((257, 7), 30, dict(loc_range=(2, 1), long_range=(6, 2))),
    ((151, 1), 5, dict(loc_range=(3, 2), long_range=(8, 3))),       # one channel
    ((160, 3), 4, dict(loc_range=(5, 4), long_range=(10, 6))),    # windows wider than the probe
    ((64, 5), 12, dict(loc_range=(0, 0), long_range=(1, 0))),      # zero half widths
])
def test_isolated_peaks_match_literal_reference(rng, shape, n_spikes, kw):
    S1 = _batch_with_spikes(rng, *shape, n_spikes)
    args = dict(spk_th=-6.0, nt0=11, **kw)
    ref = _isolated_peaks_reference(S1, **args)
    assert ref[0].size >= 1, "the random batch should hold isolated peaks"
    _assert_same_peaks(isolated_peaks_new(S1, **args), ref)


def test_isolated_peaks_batch_edges_and_outer_channels():
    NT, nchan, nt0 = 200, 9, 20
    S1 = np.zeros((NT, nchan), np.float32)
    # 0-based rows: nt0-1 and NT-nt0-1 are zeroed (MATLAB rows nt0 and end-nt0), nt0 and
    # NT-nt0-2 are the first and last rows kept
    for t in (nt0 - 1, nt0, NT - nt0 - 2, NT - nt0 - 1):
        S1[t, 0] = -8.0
    S1[100, nchan - 1] = -7.0
    S1[60, 4] = -9.0
    S1[150, 4] = -10.0
    args = dict(spk_th=-6.0, nt0=nt0, long_range=(0, 0))
    row, col, mu = isolated_peaks_new(S1, **args)
    # channel-major order (MATLAB's column-major find): channel 0 first, channel 8 last
    np.testing.assert_array_equal(col, [0, 0, 4, 4, nchan - 1])
    np.testing.assert_array_equal(row, [nt0, NT - nt0 - 2, 60, 150, 100])
    np.testing.assert_array_equal(mu, [8, 8, 9, 10, 7])
    _assert_same_peaks((row, col, mu), _isolated_peaks_reference(S1, **args))


def test_isolated_peaks_threshold_is_strict():
    th = np.float32(-6.0)
    S1 = np.zeros((120, 4), np.float32)
    S1[40, 1] = th                               # exactly at threshold: not a peak
    S1[80, 2] = np.nextafter(th, np.float32(-np.inf))  # one ulp below: a peak
    row, col, mu = isolated_peaks_new(S1, spk_th=float(th), nt0=10)
    np.testing.assert_array_equal(row, [80])
    np.testing.assert_array_equal(col, [2])
    assert mu[0] == -S1[80, 2]


@pytest.mark.parametrize("gap, expect_found", [(0.0005, False), (0.01, True)])
def test_isolated_peaks_local_minimum_margin(gap, expect_found):
    """Two samples within 1e-3 of each other are both local minima, so neither is isolated."""
    S1 = np.zeros((150, 5), np.float32)
    S1[70, 2] = -8.0
    S1[73, 3] = -8.0 + gap
    row, col, _ = isolated_peaks_new(S1, spk_th=-6.0, nt0=10)
    if expect_found:
        np.testing.assert_array_equal(np.c_[row, col], [[70, 2]])
    else:
        assert row.size == 0
    _assert_same_peaks((row, col, _), _isolated_peaks_reference(S1, spk_th=-6.0, nt0=10))


def test_isolated_peaks_isolation_window_edges():
    """A second peak exactly long_range away suppresses both; one sample further it does not."""
    S1 = np.zeros((200, 20), np.float32)
    S1[60, 2], S1[90, 2] = -8.0, -9.0      # 30 samples apart: both suppressed
    S1[60, 10], S1[60, 17] = -8.0, -9.0    # 7 channels apart: both kept
    row, col, _ = isolated_peaks_new(S1, spk_th=-6.0, nt0=10)
    np.testing.assert_array_equal(np.c_[row, col], [[60, 10], [60, 17]])


def test_isolated_peaks_nan_sample_is_reported_like_matlab():
    """0 * NaN is NaN, and find() reports non-zero NaNs: a NaN sample comes back (mu NaN)."""
    S1 = np.zeros((100, 3), np.float32)
    S1[50, 1] = np.nan
    row, col, mu = isolated_peaks_new(S1, spk_th=-6.0, nt0=10)
    np.testing.assert_array_equal(np.c_[row, col], [[50, 1]])
    assert np.isnan(mu[0])


def _my_min_sum_literal(S, half, axis, op):
    """my_min / my_sum along one axis: pad, then fold 2*half shifted copies into the first."""
    S = np.moveaxis(np.asarray(S, np.float64), axis, 0)
    n = S.shape[0]
    pad = np.full((half,) + S.shape[1:], np.inf if op == "min" else 0.0)
    P = np.concatenate([pad, S, pad])
    acc = P[0:n].copy()
    for j in range(1, 2 * half + 1):
        for i in range(n):
            acc[i] = np.fmin(acc[i], P[j + i]) if op == "min" else acc[i] + P[j + i]
    return np.moveaxis(acc, 0, axis)


@pytest.mark.parametrize("half", [(0, 2), (3, 1), (5, 4), (40, 9)])
def test_running_min_and_count_match_literal_my_min_my_sum(rng, half):
    S = rng.standard_normal((33, 6)).astype(np.float32)
    S[5, 2] = np.nan  # MATLAB's min skips NaN
    ref = _my_min_sum_literal(_my_min_sum_literal(S, half[0], 0, "min"), half[1], 1, "min")
    np.testing.assert_array_equal(running_min(S, half, (0, 1)), ref.astype(np.float32))
    m = rng.random((33, 6)) < 0.3
    ref = _my_min_sum_literal(_my_min_sum_literal(m, half[0], 0, "sum"), half[1], 1, "sum")
    np.testing.assert_array_equal(running_count(m, half, (0, 1)), ref)


# ------------------------------------------------------------------ getClosestChannels
def _closest_reference(xc, yc, sigma, nclosest):
    n = len(xc)
    C2C = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            C2C[i, j] = math.sqrt((xc[i] - xc[j]) ** 2 + (yc[i] - yc[j]) ** 2)
    iC = np.zeros((nclosest, n), np.int64)
    mask = np.zeros((nclosest, n))
    for j in range(1, n + 1):
        # stable ascending sort of column j: ties keep channel order
        order = sorted(range(1, n + 1), key=lambda i: (C2C[i - 1, j - 1], i))
        for k in range(1, nclosest + 1):
            iC[k - 1, j - 1] = order[k - 1]
            mask[k - 1, j - 1] = math.exp(-C2C[order[k - 1] - 1, j - 1] ** 2 / (2 * sigma ** 2))
        norm = math.sqrt(1e-3 + sum(mask[k, j - 1] ** 2 for k in range(nclosest)))
        mask[:, j - 1] /= norm
    return iC - 1, mask.astype(np.float32), C2C


def _neuropixels_like(n):
    return np.tile([43.0, 11.0, 59.0, 27.0], n)[:n], (np.arange(n) // 2) * 20.0


@pytest.mark.parametrize("case", ["np_like", "grid_ties", "duplicates", "one_channel", "all"])
def test_closest_channels_match_literal_reference(rng, case):
    sigma, nclosest = 30.0, 8
    if case == "np_like":
        xc, yc = _neuropixels_like(23)
    elif case == "grid_ties":   # small integer grid: many equal distances
        xc, yc = rng.integers(0, 4, 17) * 10.0, rng.integers(0, 4, 17) * 10.0
    elif case == "duplicates":  # channels 3 and 7 share a position
        xc, yc = rng.random(12) * 100, rng.random(12) * 100
        xc[7], yc[7] = xc[3], yc[3]
    elif case == "one_channel":
        xc, yc, nclosest = np.array([5.0]), np.array([7.0]), 1
    else:
        xc, yc = rng.random(9) * 50, rng.random(9) * 50
        nclosest, sigma = 9, 12.5
    iC, mask, C2C = get_closest_channels(xc=xc, yc=yc, sigma_mask=sigma, n_closest=nclosest)
    ref_iC, ref_mask, ref_C2C = _closest_reference(xc, yc, sigma, nclosest)
    assert iC.dtype == np.int64 and mask.dtype == np.float32 and C2C.dtype == np.float64
    assert iC.shape == mask.shape == (nclosest, len(xc)) and iC.flags.f_contiguous
    np.testing.assert_array_equal(iC, ref_iC)
    np.testing.assert_array_equal(C2C, ref_C2C)
    np.testing.assert_allclose(mask, ref_mask, rtol=1e-6, atol=0)


def test_closest_channels_properties():
    xc, yc = _neuropixels_like(30)
    sigma = 30.0
    iC, mask, C2C = get_closest_channels(xc=xc, yc=yc, sigma_mask=sigma, n_closest=12)
    np.testing.assert_array_equal(iC[0], np.arange(30))  # distinct positions: itself first
    dist = np.take_along_axis(C2C, iC, axis=0)
    assert np.all(np.diff(dist, axis=0) >= 0)
    # unnormalised weight is 1 at distance 0; normalisation divides by sqrt(1e-3 + sum w^2)
    w = np.exp(-dist ** 2 / (2 * sigma ** 2))
    np.testing.assert_allclose(mask[0], 1 / np.sqrt(1e-3 + (w ** 2).sum(0)), rtol=1e-6)
    s = (w ** 2).sum(0)
    np.testing.assert_allclose((mask.astype(np.float64) ** 2).sum(0), s / (1e-3 + s), rtol=1e-6)
    # duplicated position: the earlier channel wins the tie, even for the later channel's column
    xc[5], yc[5] = xc[2], yc[2]
    iC, _, _ = get_closest_channels(xc=xc, yc=yc, sigma_mask=sigma, n_closest=3)
    assert iC[0, 5] == 2 and iC[1, 5] == 5 and iC[0, 2] == 2 and iC[1, 2] == 5
    with pytest.raises(ValueError):
        get_closest_channels(xc=xc, yc=yc, sigma_mask=sigma, n_closest=31)


# ------------------------------------------------------------------ getKernels
def _octave_linspace_loop(x1, x2, n):
    """Octave 7's linspace, element by element from both ends."""
    y = [0.0] * n
    y[0], y[n - 1] = x1, x2
    delta = (x2 - x1) / (n - 1)
    for i in range(1, n // 2):
        y[i] = x1 + i * delta
        y[n - 1 - i] = x2 - i * delta
    if n % 2 == 1:
        y[n // 2] = 0.0 if x1 == -x2 else (x1 + x2) / 2
    return y


def _kernels_reference(nt0, nt0min, nup, sig, linspace="matlab"):
    xs = [float(i) for i in range(1, nt0 + 1)]
    n1 = nt0 * nup
    if linspace == "matlab":   # MATLAB linspace(.5, nt0+.5, n1+1) without its last point
        ys = [0.5 + (k * float(nt0)) / n1 for k in range(n1)]
    else:
        ys = _octave_linspace_loop(0.5, nt0 + 0.5, n1 + 1)[:-1]

    def dist(a, b):
        d = math.fmod(a - b + nt0, nt0)
        return min(d, nt0 - d)

    M = np.array([[math.exp(-dist(a, b) ** 2 / sig ** 2) for b in xs] for a in xs])
    M += 0.01 * np.eye(nt0)
    Kyx = np.array([[math.exp(-dist(y, b) ** 2 / sig ** 2) for b in xs] for y in ys])
    B = np.linalg.solve(M.T, Kyx.T).T  # B = Kyx / M, by LU this time
    Ka = np.zeros((nup, nt0))
    Kb = np.zeros((nt0, nt0, nup))
    for a in range(1, nup + 1):          # reshape(B, nup, nt0, nt0), column-major
        for b in range(1, nt0 + 1):
            for c in range(1, nt0 + 1):
                v = B[(a - 1) + nup * (b - 1), c - 1]
                Kb[b - 1, c - 1, a - 1] = v     # permute(.., [2 3 1])
                if b == nt0min:
                    Ka[a - 1, c - 1] = v        # squeeze(B(:, nt0min, :))
    return Ka, Kb


@pytest.mark.parametrize("linspace", ["matlab", "octave"])
@pytest.mark.parametrize("nt0, nt0min, nup, sig", [
    (61, 20, 10, 1.0),   # Kilosort2's call: getKernels(ops, 10, 1)
    (31, 11, 5, 1.5),
    (8, 1, 3, 0.7),      # trough at the first sample
    (9, 9, 4, 1.0),      # trough at the last sample
    (8, 4, 10, 3.0),     # kernel matrix not positive definite: the symmetric-indefinite path
])
def test_kernels_match_literal_reference(nt0, nt0min, nup, sig, linspace):
    Ka, Kb = get_kernels(nt0=nt0, nt0min=nt0min, nup=nup, sig=sig, linspace=linspace)
    ref_a, ref_b = _kernels_reference(nt0, nt0min, nup, sig, linspace)
    assert Ka.shape == (nup, nt0) and Kb.shape == (nt0, nt0, nup)
    assert Ka.dtype == Kb.dtype == np.float64 and Ka.flags.f_contiguous and Kb.flags.f_contiguous
    np.testing.assert_allclose(Ka, ref_a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(Kb, ref_b, rtol=0, atol=1e-12)


def test_kernels_properties():
    nt0, nt0min, nup = 61, 20, 10
    Ka, Kb = get_kernels(nt0=nt0, nt0min=nt0min, nup=nup, sig=1.0)
    np.testing.assert_array_equal(Ka, Kb[nt0min - 1].T)
    # circular time axis: kernels are circulant in (time, sample)
    np.testing.assert_allclose(np.roll(Kb, (1, 1), axis=(0, 1)), Kb, rtol=0, atol=1e-12)
    # a slow periodic signal is interpolated to within the ridge's ~1% shrinkage
    t = np.arange(nt0)
    f = lambda x: np.cos(2 * np.pi * x / nt0) + 0.5 * np.sin(4 * np.pi * x / nt0)  # noqa: E731
    up = np.einsum("bca,c->ba", Kb, f(t))
    times = t[:, None] - 0.5 + np.arange(nup)[None, :] / nup  # Kb[b, :, a] -> time b-0.5+a/nup
    np.testing.assert_allclose(up, f(times), rtol=0, atol=0.02)
    np.testing.assert_allclose(Ka @ f(t), f(nt0min - 1 - 0.5 + np.arange(nup) / nup), atol=0.02)
    with pytest.raises(ValueError):
        get_kernels(nt0=61, nt0min=0)


def test_matlab_linspace():
    y = matlab_linspace(0.5, 61.5, 611)
    k = np.arange(611)
    np.testing.assert_array_equal(y[1:-1], 0.5 + (k[1:-1] * 61.0) / 610)
    assert y[0] == 0.5 and y[-1] == 61.5
    assert not np.array_equal(y, np.linspace(0.5, 61.5, 611))  # numpy rounds differently
    for n in (611, 610, 2, 3):
        np.testing.assert_array_equal(matlab_linspace(0.5, 61.5, n, style="octave"),
                                      _octave_linspace_loop(0.5, 61.5, n))
    assert not np.array_equal(matlab_linspace(0.5, 61.5, 611, style="octave"), y)
    # Octave's odd-length middle element is the midpoint, not d2 - k*delta
    assert matlab_linspace(-2.0, -0.9, 3, style="octave")[1] == -1.45


def test_release_mapped_pages_drops_a_read_memory_map_from_the_resident_set(tmp_path):
    """Export streams features through memory maps; their read pages must not stay resident."""
    import os

    from pykilosort.utils import release_mapped_pages

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    np.save(tmp_path / "big.npy", np.ones(64 * 2**20 // 4, np.float32))  # 64 MiB
    a = np.load(tmp_path / "big.npy", mmap_mode="r")
    before = rss_mib()
    assert float(a[::1024].sum()) == a.size / 1024  # touches every page
    touched = rss_mib()
    release_mapped_pages(a[10:])  # a view finds its map
    assert touched - before > 48 and touched - rss_mib() > 48


def test_release_mapped_pages_keeps_what_was_written_through_a_shared_map(tmp_path):
    """The extraction writes per-batch templates (WA, UA) into scratch maps and releases each
    batch's pages: the written values must survive, in the map and in the file."""
    from pykilosort.utils import release_mapped_pages

    a = np.lib.format.open_memmap(tmp_path / "wa.npy", "w+", np.float32, (61, 40, 3, 20),
                                  fortran_order=True)
    expected = np.random.default_rng(0).standard_normal(a.shape).astype(np.float32)
    for k in range(a.shape[-1]):
        a[..., k] = expected[..., k]
        release_mapped_pages(a)
    np.testing.assert_array_equal(a, expected)
    del a
    np.testing.assert_array_equal(np.load(tmp_path / "wa.npy"), expected)


def test_feature_export_memory_does_not_grow_with_the_spike_count(tmp_path):
    """pc_features.npy is written block by block: 4x the spikes, the same peak (issue 12)."""
    import tracemalloc

    from pykilosort.export import _write_features

    peaks = []
    for n in (40_000, 160_000):  # a short and a 4x longer recording's spike counts
        src = np.lib.format.open_memmap(tmp_path / f"src{n}.npy", "w+", np.float32, (n, 3, 8))
        src[:] = np.arange(n, dtype=np.float32)[:, None, None] + np.arange(24).reshape(3, 8)
        rows = np.arange(n)[::-1].copy()
        tracemalloc.start()
        _write_features(tmp_path / f"out{n}.npy", src, rows)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        out = np.load(tmp_path / f"out{n}.npy")
        np.testing.assert_array_equal(out, src[rows])
    assert peaks[1] < 1.1 * peaks[0]


def test_peak_rss_is_this_process_not_the_parent_it_was_started_from():
    """A run started from a large process (a notebook) reports its own peak: ru_maxrss would
    carry the parent's resident memory at the fork over the exec."""
    import subprocess
    import sys

    from pykilosort.logs import peak_rss_mib

    big = np.ones(300 * 2**20 // 8)  # 300 MiB resident in this (the parent) process
    assert peak_rss_mib() > 300
    code = "from pykilosort.logs import peak_rss_mib; print(peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)
    assert 5 < child < 200, child  # numpy + pykilosort.logs: tens of MiB, not the parent's peak
    del big


def test_file_sha256_reads_the_whole_file_past_its_block_size(tmp_path):
    import hashlib

    from pykilosort.utils import file_sha256

    data = np.random.default_rng(0).integers(0, 255, (1 << 24) + 1001, dtype=np.uint8).tobytes()
    path = tmp_path / "rec.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1] + (b"\x00" if data[-1] else b"\x01"))  # the last byte only
    assert file_sha256(path) != hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ proc file batches
@pytest.mark.parametrize("layout", ["F", "C"])
@pytest.mark.parametrize("scaleproc", [200.0, 3.7])
def test_unscaled_batch_equals_numpy_float32_division(rng, layout, scaleproc):
    from pykilosort.procfile import unscaled

    block = np.asarray(rng.integers(-32768, 32768, (1031, 37)), np.int16, order=layout)
    block[0, :2] = [-32768, 32767]
    got = unscaled(block, scaleproc)
    assert got.dtype == np.float32 and got.flags.f_contiguous
    ref = block.astype(np.float32) / np.float32(scaleproc)
    np.testing.assert_array_equal(got.view(np.int32), ref.view(np.int32))
