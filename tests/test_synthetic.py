"""Tests of the seeded synthetic ground-truth generator (pykilosort.synthetic)."""
import math

import numpy as np
import pytest

from pykilosort.synthetic import SyntheticRecording, make_synthetic_recording, staggered_probe


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    """10 s, 32 channels, 10 units, no drift: the default demo recording."""
    return make_synthetic_recording(tmp_path_factory.mktemp("base") / "rec.bin", seed=7)


def _mapped(r: SyntheticRecording) -> np.ndarray:
    """(n_samples, Nchan) float64 data of the mapped channels."""
    return np.asarray(r.memmap()[:, r.probe.chanMap], np.float64)


def _spike_free(r: SyntheticRecording) -> np.ndarray:
    """(n_samples,) bool, True where no waveform of any unit is present."""
    free = np.ones(r.n_samples, bool)
    n_t = r.templates.shape[1]
    for t in r.spike_times - r.trough_index:
        free[t:t + n_t] = False
    return free


def _average_snippet(data, times, *, trough, n_t) -> np.ndarray:
    """(n_t, C) mean of data[t - trough : t - trough + n_t] over spike times t."""
    idx = (times - trough)[:, None] + np.arange(n_t)[None]
    return data[idx].mean(axis=0)


# --------------------------------------------------------------------------- reproducibility
def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path):
    kw = dict(duration_s=1.0, n_channels=16, n_units=4, drift="rigid", drift_um=10.0)
    a = make_synthetic_recording(tmp_path / "a.bin", seed=3, **kw)
    b = make_synthetic_recording(tmp_path / "b.bin", seed=3, **kw)
    c = make_synthetic_recording(tmp_path / "c.bin", seed=4, **kw)
    assert a.bin_path.read_bytes() == b.bin_path.read_bytes()
    np.testing.assert_array_equal(a.spike_times, b.spike_times)
    assert a.bin_path.read_bytes() != c.bin_path.read_bytes()
    assert not np.array_equal(a.unit_positions, c.unit_positions)


def test_output_does_not_depend_on_chunk_size(tmp_path):
    # 0.001 s = 30 samples, shorter than a waveform: spikes straddle up to three chunks
    kw = dict(duration_s=2.0, n_channels=32, n_units=8, seed=11, drift="nonrigid",
              firing_rate_range=(20.0, 40.0))
    files = [make_synthetic_recording(tmp_path / f"c{i}.bin", chunk_s=cs, **kw).bin_path
             for i, cs in enumerate((0.001, 0.37, 5.0))]
    ref = files[0].read_bytes()
    assert all(f.read_bytes() == ref for f in files[1:])


# --------------------------------------------------------------------------- spike trains
def test_spike_trains_respect_refractory_period_and_rates(tmp_path):
    r = make_synthetic_recording(tmp_path / "r.bin", n_channels=4, n_units=10, duration_s=60.0,
                                 firing_rate_range=(5.0, 15.0), refractory_s=0.005, seed=2)
    assert np.all(np.diff(r.spike_times) >= 0)
    ref = math.ceil(0.005 * r.fs)
    n_t = r.templates.shape[1]
    starts = r.spike_times - r.trough_index
    assert starts.min() >= 0.002 * r.fs and starts.max() + n_t <= r.n_samples - 0.002 * r.fs
    t_eff = r.n_samples / r.fs - 0.004 - n_t / r.fs
    counts = np.bincount(r.spike_clusters, minlength=r.n_units)
    expected = r.firing_rates * t_eff
    for u in range(r.n_units):
        isi = np.diff(r.spike_times[r.spike_clusters == u])
        assert isi.min() >= ref
        assert isi.min() < ref + 0.005 * r.fs          # the refractory bound is actually reached
        assert abs(counts[u] - expected[u]) < 5 * math.sqrt(expected[u])  # renewal: var < Poisson
    assert abs(counts.sum() - expected.sum()) < 4 * math.sqrt(expected.sum())  # ~5 % here
    assert np.all((r.firing_rates >= 5.0) & (r.firing_rates <= 15.0))


# --------------------------------------------------------------------------- waveforms
def test_trough_lands_on_spike_time_and_average_matches_template(rec):
    data = _mapped(rec)
    u = int(np.argmax(rec.snr))
    times = rec.spike_times[rec.spike_clusters == u]
    avg = _average_snippet(data, times, trough=rec.trough_index, n_t=rec.templates.shape[1])
    template = rec.templates[u]
    pc = rec.peak_channels[u]
    assert np.argmin(avg[:, pc]) == rec.trough_index
    assert np.argmin(template[:, pc]) == rec.trough_index
    assert np.argmin(avg.min(axis=0)) == pc
    avg -= avg.mean(axis=0)                               # drop slow noise offsets
    corr = np.corrcoef(avg.ravel(), (template - template.mean(axis=0)).ravel())[0, 1]
    assert corr > 0.9
    assert avg[rec.trough_index, pc] == pytest.approx(template[rec.trough_index, pc] -
                                                      template[:, pc].mean(), rel=0.15)


def test_templates_are_exactly_what_was_added(tmp_path):
    r = make_synthetic_recording(tmp_path / "q.bin", noise_std=0.0, duration_s=1.0, seed=5,
                                 firing_rate_range=(20.0, 40.0))
    n_t = r.templates.shape[1]
    model = np.zeros((r.n_samples, r.probe.Nchan))
    for t, u in zip(r.spike_times - r.trough_index, r.spike_clusters):
        model[t:t + n_t] += r.templates[u]
    assert np.abs(_mapped(r) - model).max() <= 0.5 + 1e-3
    assert np.all(np.isinf(r.snr))


def test_footprint_spans_few_channels(rec):
    trough = -rec.templates[:, rec.trough_index, :]                # (U, C) positive
    peak = trough.max(axis=1)
    np.testing.assert_allclose(peak, rec.amplitudes, rtol=1e-5)
    np.testing.assert_array_equal(trough.argmax(axis=1), rec.peak_channels)
    np.testing.assert_allclose(rec.snr, rec.amplitudes / 10.0)
    n_seen = (trough > 0.1 * peak[:, None]).sum(axis=1)
    assert np.all((n_seen >= 3) & (n_seen <= 14)) and 6 <= np.median(n_seen) <= 12
    xy = np.stack([rec.probe.xc, rec.probe.yc], 1)
    dist = np.linalg.norm(xy[None] - rec.unit_positions[:, None], axis=2)   # (U, C)
    assert (trough / peak[:, None])[dist > 100].max() < 0.02      # exp(-d / lambda) tail


# --------------------------------------------------------------------------- noise
def test_noise_std_matches_on_spike_free_samples(rec):
    noise = _mapped(rec)[_spike_free(rec)]
    assert noise.shape[0] > 0.5 * rec.n_samples
    std = noise.std(axis=0)
    assert np.all(np.abs(std / 10.0 - 1) < 0.10)
    assert abs(std.mean() / 10.0 - 1) < 0.05


def test_noise_is_spatially_and_temporally_correlated(rec):
    data = _mapped(rec)
    free = _spike_free(rec)
    corr = np.corrcoef(data[free].T)
    xy = np.stack([rec.probe.xc, rec.probe.yc], 1)
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    near = corr[(dist > 0) & (dist <= 26)].mean()
    far = np.abs(corr[dist >= 150]).mean()
    assert near > 0.15 and far < 0.05 and near > far + 0.1
    # coloured in time: neighbouring samples correlate, distant ones much less
    x = data[:, 0] - data[:, 0].mean()
    lag = lambda k: np.dot(x[:-k], x[k:]) / np.dot(x, x)   # noqa: E731
    assert lag(1) > 0.1 and lag(1000) < 0.5 * lag(1)


# --------------------------------------------------------------------------- drift
@pytest.mark.parametrize("kind", ["rigid", "nonrigid"])
def test_drift_moves_peak_channel_as_specified(tmp_path, kind):
    r = make_synthetic_recording(tmp_path / "d.bin", n_channels=64, n_units=6, duration_s=8.0,
                                 drift=kind, drift_um=40.0, drift_period_s=8.0, seed=21,
                                 amplitude_range=(150.0, 200.0), firing_rate_range=(10.0, 15.0),
                                 noise_std=5.0)
    # the stored displacement is the 40 um sinusoid (plus a small random walk)
    base = 40.0 * np.sin(2 * np.pi * r.drift_times / 8.0)
    bottom, top = r.drift[:, 0], r.drift[:, -1]
    if kind == "rigid":
        np.testing.assert_array_equal(bottom, top)
        assert np.abs(top - base).max() < 20.0 and np.corrcoef(top, base)[0, 1] > 0.9
    else:
        np.testing.assert_allclose(top, 3.0 * bottom)     # 1.5x at the top, 0.5x at the bottom
    data = _mapped(r)
    n_t = r.templates.shape[1]
    xy = np.stack([r.probe.xc, r.probe.yc], 1)
    for u in range(r.n_units):
        ys_obs, ys_true = [], []
        for t_mid in (2.0, 6.0):                           # drift at +max, then at -max
            times = r.spike_times[(r.spike_clusters == u) &
                                  (np.abs(r.spike_times / r.fs - t_mid) < 0.75)]
            avg = _average_snippet(data, times, trough=r.trough_index, n_t=n_t)
            ys_obs.append(r.probe.yc[np.argmin(avg[r.trough_index])])
            pos = r.unit_positions_at(times / r.fs)[:, u].mean(axis=0)
            ys_true.append(pos[1])
            nearest = np.argmin(np.linalg.norm(xy - pos, axis=1))
            assert abs(ys_obs[-1] - r.probe.yc[nearest]) <= 20.0
        moved_true = ys_true[1] - ys_true[0]
        assert moved_true < -30                           # every unit moved down
        assert abs((ys_obs[1] - ys_obs[0]) - moved_true) <= 30.0


def test_unit_positions_at_without_drift_is_constant(rec):
    pos = rec.unit_positions_at([0.0, 5.0, 9.9])
    assert pos.shape == (3, rec.n_units, 2) and rec.drift is None
    np.testing.assert_array_equal(pos[2], rec.unit_positions)


# --------------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path):
    r = make_synthetic_recording(tmp_path / "s.bin", duration_s=1.0, n_channels=32,
                                 drift="nonrigid", extra_channels=1, seed=9)
    assert r.gt_path.name == "s_gt.npz" and r.probe_path.name == "s_probe.json"
    for path in (r.bin_path, r.gt_path):
        back = SyntheticRecording.load(path)
        assert back.bin_path == r.bin_path and back.probe == r.probe
        assert (back.fs, back.n_samples, back.trough_index) == (r.fs, r.n_samples, r.trough_index)
        assert back.params == r.params and back.params["seed"] == 9
        for name in ("spike_times", "spike_clusters", "templates", "unit_positions",
                     "peak_channels", "snr", "amplitudes", "firing_rates", "drift", "drift_times",
                     "drift_depths"):
            got, want = getattr(back, name), getattr(r, name)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    plain = make_synthetic_recording(tmp_path / "p.bin", duration_s=0.5)
    plain = SyntheticRecording.load(plain.bin_path)
    assert plain.drift is None and plain.drift_times is None


def test_file_size_and_extra_channels_stay_zero(tmp_path):
    r = make_synthetic_recording(tmp_path / "x.bin", n_channels=32, extra_channels=1,
                                 duration_s=1.5, seed=1)
    assert r.n_samples == 45000 and r.probe.NchanTOT == 33 and r.probe.Nchan == 32
    assert r.bin_path.stat().st_size == r.n_samples * 33 * 2
    raw = r.memmap()
    assert not raw[:, 32].any()
    assert raw[:, :32].std() > 5


def test_staggered_probe_layout():
    p = staggered_probe(n_channels=6, extra_channels=1)
    np.testing.assert_array_equal(p.xc, [43, 11, 59, 27, 43, 11])
    np.testing.assert_array_equal(p.yc, [0, 0, 20, 20, 40, 40])
    np.testing.assert_array_equal(p.chanMap, np.arange(6))
    assert p.NchanTOT == 7 and p.connected.all()
    assert staggered_probe(n_channels=4, pitch_um=15.0).yc[-1] == 15.0


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_units=0), "n_units"),
    (dict(duration_s=0.0), "duration_s"),
    (dict(duration_s=-1.0), "duration_s"),
    (dict(drift="wobbly"), "drift"),
    (dict(n_channels=0), "n_channels"),
    (dict(amplitude_range=(200.0, 60.0)), "amplitude_range"),
    (dict(firing_rate_range=(0.0, 5.0)), "firing_rate_range"),
    (dict(noise_std=-1.0), "noise_std"),
    (dict(chunk_s=0.0), "chunk_s"),
    (dict(refractory_s=0.1), "refractory_s"),
    (dict(drift="rigid", drift_um=500.0), "drift_um"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments_raise_value_error_naming_them(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_synthetic_recording(tmp_path / "bad.bin", **kwargs)
    assert not (tmp_path / "bad.bin").exists()


def test_load_or_make_reuses_only_an_identical_intact_recording(tmp_path):
    import os

    from pykilosort.synthetic import load_or_make_synthetic_recording

    path = tmp_path / "r.bin"
    kw = dict(n_channels=8, n_units=2, duration_s=0.5, seed=3)
    first = load_or_make_synthetic_recording(path, **kw)
    os.utime(path, ns=(1, 1))  # mark the file: a regeneration would reset its mtime
    again = load_or_make_synthetic_recording(path, **kw)
    assert path.stat().st_mtime_ns == 1 and np.array_equal(again.spike_times, first.spike_times)
    load_or_make_synthetic_recording(path, **{**kw, "seed": 4})  # other arguments: regenerated
    assert path.stat().st_mtime_ns != 1
    os.utime(path, ns=(1, 1))
    load_or_make_synthetic_recording(path, **{**kw, "seed": 4}, noise_std=12.0)  # a default changed
    assert path.stat().st_mtime_ns != 1
    with open(path, "r+b") as f:  # truncated file: regenerated
        f.truncate(100)
    os.utime(path, ns=(1, 1))
    rec = load_or_make_synthetic_recording(path, **kw)
    assert path.stat().st_size == rec.n_samples * 8 * 2
