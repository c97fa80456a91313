"""Kilosort 2.5's batch registration (shift_batch_on_disk2.m, kernel2D.m of v2.5.2): the kernel and
the prediction matrix against their MATLAB formulas written out literally, and what the shift
does to data on a probe."""
import numpy as np
import pytest

from pykilosort.datashift import flush_subnormals, kernel2d, shift_batch, shift_matrix
from pykilosort.kernels import round_int16
from pykilosort.makima import makima


def _probe(n=32):
    """Neuropixels-like: two columns 32 um apart, 20 um rows."""
    return np.tile([0.0, 32.0], n // 2), np.repeat(np.arange(n // 2) * 20.0, 2)


def test_kernel_and_matrix_follow_the_matlab_formulas():
    xc, yc = _probe(16)
    sig = 20.0
    K = kernel2d(xp=np.c_[xc, yc], yp=np.c_[xc + 3, yc - 7][:5], sig=sig)
    for i in range(16):
        for j in range(5):
            expected = np.exp(-abs(xc[i] - xc[j] - 3) / sig - abs(yc[i] - yc[j] + 7) / (1.5 * sig))
            assert K[i, j] == pytest.approx(expected, rel=1e-14)
    ysamp, shifts = np.array([0.0, 50, 100, 150]), np.array([3.0, -2, 5, 1])
    M = shift_matrix(xc=xc, yc=yc, shifts=shifts, ysamp=ysamp, sig=sig)
    per_channel = makima(x=ysamp, y=shifts, xq=yc)  # interp1(ysamp, shifts, yc, 'makima', 'extrap')
    xp = np.c_[xc, yc]
    kxx = kernel2d(xp=xp, yp=xp, sig=sig)
    kyx = kernel2d(xp=np.c_[xc, yc - per_channel], yp=xp, sig=sig)
    np.testing.assert_allclose(M, kyx @ np.linalg.inv(kxx + 0.01 * np.eye(16)), atol=1e-10)
    rigid = shift_matrix(xc=xc, yc=yc, shifts=[4.0], ysamp=[75.0], sig=sig)
    kyx4 = kernel2d(xp=np.c_[xc, yc - 4.0], yp=xp, sig=sig)
    np.testing.assert_allclose(rigid, kyx4 @ np.linalg.inv(kxx + 0.01 * np.eye(16)), atol=1e-10)


def test_a_shift_of_one_row_moves_the_signal_one_row():
    xc, yc = _probe(32)
    depth_profile = 1000 * np.exp(-((yc - 150.0) / 40.0) ** 2)  # a smooth spatial footprint
    batch = np.tile(depth_profile, (600, 1)).astype(np.int16)
    M = shift_matrix(xc=xc, yc=yc, shifts=[20.0], ysamp=[150.0], sig=20.0)
    out, _ = shift_batch(batch=batch, M=M, dprev=np.zeros((64, 32), np.float32), NT=536, ntbuff=64)
    # channel at depth y now holds what was at depth y - 20 (one row down): compare in the middle
    expected = 1000 * np.exp(-((yc - 20.0 - 150.0) / 40.0) ** 2)
    inner = (yc >= 60) & (yc <= 240)
    row = out[300].astype(float)
    assert np.abs(row[inner] - expected[inner]).max() < 0.05 * 1000
    assert np.abs(row[inner] - depth_profile[inner]).max() > 0.2 * 1000  # it did move


def test_subnormal_weights_are_flushed_without_changing_the_batch(rng):
    """A 384-channel probe's kriging matrix holds float32 subnormals (far channels); they are
    set to 0 (a CPU multiplies them ~40x slower) and the shifted batch is the same as with them."""
    xc, yc = _probe(384)
    M = shift_matrix(xc=xc, yc=yc, shifts=[7.0, -3.0, 2.0], ysamp=[500.0, 2000.0, 3500.0], sig=20.0)
    M32 = M.astype(np.float32)
    subnormal = (M32 != 0) & (np.abs(M32) < np.finfo(np.float32).tiny)
    assert subnormal.sum() > 1000
    flushed = flush_subnormals(M32)
    assert not ((flushed != 0) & (np.abs(flushed) < np.finfo(np.float32).tiny)).any()
    np.testing.assert_array_equal(flushed[~subnormal], M32[~subnormal])
    batch = (rng.standard_normal((1000, 384)) * 300).astype(np.int16)
    out, _ = shift_batch(batch=batch, M=M32, dprev=None, NT=1000, ntbuff=64)
    np.testing.assert_array_equal(out, round_int16(batch.astype(np.float32) @ M32.T))


def test_edges_cross_fade_with_the_previous_batch_and_hand_on_the_tail():
    rng = np.random.default_rng(0)
    NT, ntb, n = 256, 32, 8
    batch = rng.integers(-300, 300, (NT + ntb, n)).astype(np.int16)
    M = np.eye(n)
    dprev = rng.normal(0, 100, (ntb, n)).astype(np.float32)
    out, tail = shift_batch(batch=batch, M=M, dprev=dprev, NT=NT, ntbuff=ntb)
    w = np.linspace(0, 1, ntb).astype(np.float32)[:, None]
    blended = w * batch[:ntb].astype(np.float32) + (1 - w) * dprev
    np.testing.assert_array_equal(out[:ntb], np.sign(blended) * np.floor(np.abs(blended) + 0.5))
    np.testing.assert_array_equal(out[ntb:], batch[ntb:NT])
    np.testing.assert_array_equal(tail, batch[NT:].astype(np.float32))
    last, none = shift_batch(batch=batch[:NT], M=M, dprev=dprev, NT=NT, ntbuff=ntb)
    assert none is None and last.shape == (NT, n) and last.dtype == np.int16


# ------------------------------------------------------------------ align_block2
def _align_reference():
    import scipy.io

    from conftest import REFERENCE_DATA

    return scipy.io.loadmat(REFERENCE_DATA / "ks25_align.mat")


@pytest.mark.parametrize("nblocks", [1, 5])
def test_align_block2_equals_the_original_under_octave(nblocks):
    """matlab_reference/ks25_align_reference.m ran v2.5.2's align_block2 on seeded histograms of a
    drifting probe. Measured: imin and F0m identical (imin to 1e-15: sums of 0.1-bin steps),
    F0 within 2.2e-7 of its largest element (single-precision means in another order)."""
    from pykilosort.datashift import align_block2

    ref = _align_reference()
    imin, yblk, F0, F0m = align_block2(F=ref["F"], ysamp=ref["ysamp"].ravel(), nblocks=nblocks)
    np.testing.assert_allclose(imin, ref[f"imin{nblocks}"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(yblk, ref[f"yblk{nblocks}"].ravel())
    F0_ref = ref[f"F0{nblocks}"]
    assert np.abs(F0 - F0_ref).max() <= 1e-6 * np.abs(F0_ref).max()
    np.testing.assert_array_equal(F0m, ref[f"F0m{nblocks}"])
    assert imin.shape == (40, 2 * nblocks - 1)


def test_align_block2_recovers_the_imposed_drift():
    """The rigid estimate follows the drift the reference histograms were made with (in bins; the
    deeper half of the units moves 1.3 times as far, so the rigid slope lies between 1 and 1.3).
    Measured: r = 0.9997, slope 1.1."""
    from pykilosort.datashift import align_block2

    ref = _align_reference()
    imin, _, _, _ = align_block2(F=ref["F"], ysamp=ref["ysamp"].ravel(), nblocks=1)
    est, drift = -imin[:, 0], ref["drift"].ravel()
    assert np.corrcoef(est, drift)[0, 1] > 0.995
    slope = np.polyfit(drift, est, 1)[0]
    assert 1.0 < slope < 1.3, slope


def test_my_conv2_matches_its_definition():
    from pykilosort.datashift import my_conv2

    x = np.random.default_rng(0).normal(size=(7, 5, 3))
    g = np.exp(-np.arange(-2, 3) ** 2 / 0.5)
    g /= g.sum()
    expected = x.copy()
    for axis in range(3):
        moved = np.moveaxis(expected, axis, 0)
        n = moved.shape[0]
        out = np.zeros_like(moved)
        for i in range(n):
            taps = [(k, i + k - 2) for k in range(5) if 0 <= i + k - 2 < n]
            out[i] = sum(g[k] * moved[j] for k, j in taps) / sum(g[k] for k, _ in taps)
        expected = np.moveaxis(out, 0, axis)
    np.testing.assert_allclose(my_conv2(x, 0.5, (0, 1, 2)), expected, rtol=1e-12)
    np.testing.assert_array_equal(my_conv2(x, 0.2, (0,)), x)


def test_drift_histograms_follow_datashift2():
    """The binning lines of datashift2.m (v2.5.2) transcribed literally, 1-based, spike by spike."""
    from pykilosort.datashift import drift_histograms

    rng = np.random.default_rng(2)
    n, nbatch, ymin, spk_th, dd = 3000, 7, 20.0, 8.0, 5
    depths = rng.uniform(ymin, 3820.0, n)
    amps = np.round(rng.uniform(spk_th, 140, n))        # the detector rounds amplitudes
    batch = rng.integers(0, nbatch, n)
    F, ysamp = drift_histograms(depths=depths, amplitudes=amps, batches=batch, n_batches=nbatch,
                                ymin=ymin, spk_th=spk_th)
    dmin = ymin - 1
    dmax = 1 + int(np.ceil((depths - dmin).max() / dd))
    M = np.zeros((dmax, 20, nbatch))
    for d, a, t in zip(depths, amps, batch):
        amp = (np.log10(min(99, a)) - np.log10(spk_th)) / (np.log10(100) - np.log10(spk_th))
        M[int(np.ceil((d - dmin) / dd)) - 1, int(np.ceil(1e-5 + amp * 20)) - 1, t] += 1
    np.testing.assert_array_equal(F, np.log2(1 + M))
    np.testing.assert_allclose(ysamp, dmin + dd * np.arange(1, dmax + 1) - dd / 2)
    assert F[:, -1].sum() > 0 and F[:, 0].sum() > 0  # amplitudes reach both ends of the scale
    with pytest.raises(ValueError, match="below spk_th"):
        drift_histograms(depths=[30.0], amplitudes=[7.0], batches=[0], n_batches=1, ymin=ymin)


def _jumping_histograms(seed=0):
    """(120 depth bins, 20 amplitude bins, 41 batches) spike counts of 12 units that sit at
    0 bins for batches 0-5 and 34-40, -3 bins for 6-18, +3 bins for 20-33 (as SpikeInterface's
    'bump' motion); batch 19, the original's first target (min(300, floor(41/2))), holds half of
    each (the probe jumped during it)."""
    rng = np.random.default_rng(seed)
    base = np.zeros((120, 20))
    for d, a in zip(rng.integers(20, 100, 12), rng.integers(2, 18, 12)):
        base[d - 1:d + 2, a] += [3.0, 8.0, 3.0]
    offsets = [0] * 6 + [-3] * 13 + [None] + [3] * 14 + [0] * 7
    F = np.empty((120, 20, 41))
    for t, off in enumerate(offsets):
        rate = (0.5 * (np.roll(base, -3, 0) + np.roll(base, 3, 0)) if off is None
                else np.roll(base, off, 0))
        F[:, :, t] = rng.poisson(rate + 0.05)
    return F, np.array(offsets, dtype=object)


def test_first_target_avoids_a_batch_that_straddles_a_jump():
    from pykilosort.datashift import first_target

    F, _ = _jumping_histograms()
    Fg = (F - F.mean(axis=0)).astype(np.float32)
    assert first_target(Fg, avoid_jumps=False) == 19           # the original's choice
    chosen = first_target(Fg, avoid_jumps=True)
    assert chosen != 19 and abs(chosen - 19) <= 3               # a pure batch nearby
    steady = np.repeat(F[:, :, :1], 41, axis=2)                 # no jump: the original's batch
    assert first_target((steady - steady.mean(axis=0)).astype(np.float32), avoid_jumps=True) == 19


def test_registration_from_a_pure_first_target_recovers_the_jump():
    # (registered to the mixed batch, these histograms still come out right: the original's
    # failure needs the balance of a real recording, measured in benchmarks/bench_peers.py)
    from pykilosort.datashift import align_block2

    F, offsets = _jumping_histograms()
    ysamp = 5.0 * np.arange(120)
    low, high = [t for t, o in enumerate(offsets) if o == -3], [t for t, o in enumerate(offsets) if o == 3]
    fixed, _, _, _ = align_block2(F=F, ysamp=ysamp, nblocks=1, avoid_jumps=True)
    # the estimate undoes the motion: the two states 6 bins apart, the start 3 bins from each
    assert abs((np.median(fixed[low]) - np.median(fixed[high])) - 6) <= 0.5
    assert abs(np.median(fixed[:6]) - np.median(fixed[low]) + 3) <= 0.5
