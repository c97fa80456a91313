"""Kilosort 2.5's datashift step: the generic-template detector's geometry (setup_detector), the
drift estimate from detections, the crash-safe proc rewrite, and drift-corrected sorting end to end
on synthetic drifting recordings (accuracy against the imposed drift and the ground-truth units)."""
import json

import numpy as np
import pytest

import pykilosort.drift as drift_mod
from pykilosort import run
from pykilosort.detector import (closest_points, depth_of_spikes, detector_grid, matlab_colon,
                                 setup_detector)
from pykilosort.drift import channel_groups, corrected_depths, estimate_drift
from pykilosort.errors import DataQualityError
from pykilosort.evaluate import compare_to_ground_truth
from pykilosort.main import pipeline_steps
from pykilosort.params import resolve_params
from pykilosort.synthetic import make_synthetic_recording, synthetic_probe


# ------------------------------------------------------------------------- detector geometry
def test_grid_of_a_neuropixels_like_probe():
    probe = synthetic_probe(n_channels=64)  # x 11..59, rows 20 um apart
    yup, xup = detector_grid(xc=probe.xc, yc=probe.yc)
    np.testing.assert_allclose(yup, np.arange(0, 621, 10.0))  # ymin:pitch/2:ymax
    np.testing.assert_allclose(xup, np.linspace(11, 59, 4))    # floor(48/16) + 1 positions


def test_grid_of_a_single_column_is_its_column():
    probe = synthetic_probe(n_channels=16, layout="single_column", pitch_um=25)
    yup, xup = detector_grid(xc=probe.xc + 7, yc=probe.yc)
    assert xup.tolist() == [7.0] and yup.size == 2 * 15 + 1


def test_narrow_two_columns_take_matlabs_one_point_linspace():
    """xrange < 16 um: MATLAB's linspace(xmin, xmax, 1) is xmax (numpy's would be xmin)."""
    _, xup = detector_grid(xc=np.array([0.0, 12.0] * 4), yc=np.repeat(np.arange(4.0) * 20, 2))
    assert xup.tolist() == [12.0]


def test_one_depth_is_refused_with_the_fix():
    with pytest.raises(DataQualityError, match="nblocks=0"):
        detector_grid(xc=np.arange(4.0) * 20, yc=np.zeros(4))


def test_matlab_colon_includes_an_end_reached_by_rounding():
    assert matlab_colon(0.0, 0.1, 0.3).size == 4 and matlab_colon(0, 7.5, 20).tolist() == [0, 7.5, 15]


def test_closest_points_are_sorted_stably_and_capped():
    iC, dist = closest_points(ycup=np.array([10.0]), xcup=np.array([0.0]),
                              yc=np.array([0.0, 20.0, 10.0, 40.0]), xc=np.zeros(4), n=10)
    assert iC[:, 0].tolist() == [2, 0, 1, 3]       # 0 and 1 tie at 10 um: index order
    np.testing.assert_array_equal(dist[:, 0], np.float32([0, 10, 10, 30]))


@pytest.mark.parametrize("layout,n", [("single_column", 16), ("two_column", 32), ("staggered", 32)])
def test_small_probes_get_neighbourhoods_the_original_cannot_build(layout, n):
    """The original asks getClosestChannels2 for 100 centres around each centre and fails on
    probes with fewer (#255, #268); here the neighbourhoods are capped at what exists."""
    probe = synthetic_probe(n_channels=n, layout=layout)
    s = setup_detector(xc=probe.xc, yc=probe.yc)
    n_up = s.ycup.size
    assert s.iC.shape == (10, n_up) and s.iC2.shape == (min(100, n_up), n_up)
    assert (s.iC2[0] == np.arange(n_up)).all()      # each centre is its own nearest
    assert (s.dist[0] < 30).all()                    # centres near an active site only


def test_a_ten_channel_probe_uses_all_its_channels():
    probe = synthetic_probe(n_channels=8, layout="single_column")
    s = setup_detector(xc=probe.xc, yc=probe.yc)
    assert s.iC.shape[0] == 8 and np.array_equal(np.sort(s.iC[:, 0]), np.arange(8))


def test_footprint_norms_are_the_sums_of_squared_gaussians():
    probe = synthetic_probe(n_channels=32)
    s = setup_detector(xc=probe.xc, yc=probe.yc)
    d = s.dist.astype(np.float64)
    for k in range(5):
        expected = np.exp(-2 * d ** 2 / (10.0 * (k + 1)) ** 2).sum(axis=0)
        np.testing.assert_allclose(s.v2[k], expected, rtol=2e-6)


def test_shank_groups_keep_neighbourhoods_inside_their_shank():
    probe = synthetic_probe(n_channels=64, n_shanks=2)
    groups = channel_groups(probe, matlab_compat=False)
    assert len(groups) == 2 and len(channel_groups(probe, matlab_compat=True)) == 1
    s = setup_detector(xc=probe.xc, yc=probe.yc, groups=groups)
    shank_of_channel = probe.kcoords.astype(int)
    assert (shank_of_channel[s.iC] == s.group[None, :]).all()
    assert (s.group[s.iC2] == s.group[None, :]).all()
    assert set(np.unique(s.group)) == {0, 1}


def test_depth_is_the_centre_of_mass_of_positive_projections():
    iC = np.array([[0], [1], [2]])
    yc = np.array([0.0, 20.0, 40.0])
    feats = np.array([[3.0, 1.0], [1.0, 1.0], [-5.0, 2.0]], np.float32)
    depth = depth_of_spikes(features=feats, centres=np.array([0, 0]), iC=iC, yc=yc)
    np.testing.assert_allclose(depth, [20 / 4, (20 + 80) / 4])


# ------------------------------------------------------------------------- drift estimate
def _spike_table(*, shifts, depths, rng, per_batch=40):
    """Detections of units at ``depths`` seen displaced by ``shifts[k]`` in batch k."""
    rows = []
    amps = rng.uniform(9, 60, len(depths))  # each unit its own amplitude
    for k, s in enumerate(shifts):
        for y, a in zip(depths, amps):
            n = per_batch
            rows.append(np.column_stack([y + s + rng.normal(0, 1.5, n),
                                         a * rng.uniform(0.9, 1.1, n), np.full(n, k)]))
    t = np.concatenate(rows)
    return {"depth": t[:, 0], "amplitude": np.floor(t[:, 1]), "batch": t[:, 2].astype(int),
            "group": np.zeros(len(t), int)}


@pytest.mark.parametrize("nblocks", [1, 5])
def test_drift_estimate_undoes_an_imposed_rigid_drift(nblocks):
    rng = np.random.default_rng(4)
    shifts = 18 * np.sin(np.linspace(0, 2 * np.pi, 30))
    yc = np.arange(0, 600, 20.0)
    spikes = _spike_table(shifts=shifts, depths=np.sort(rng.uniform(60, 540, 20)), rng=rng)
    est = estimate_drift(spikes, yc=yc, groups=[np.arange(yc.size)], n_batches=30,
                         nblocks=nblocks, spk_th=8.0)
    assert est["dshift"].shape == (30, 2 * nblocks - 1)
    fix = est["dshift"].mean(axis=1)
    residual = shifts + fix  # corrected = seen + dshift: constant if the estimate is right
    assert np.std(residual) < 1.0, residual
    after = corrected_depths(depths=spikes["depth"], batches=spikes["batch"],
                             dshift=est["dshift"], yblk=est["yblk"])
    unit_depth = np.sort(np.random.default_rng(4).uniform(60, 540, 20))[0]  # the same draw
    one_unit = np.abs(spikes["depth"] - shifts[spikes["batch"]] - unit_depth) < 5
    assert np.std(after[one_unit]) < 2.5 < np.std(spikes["depth"][one_unit])


def test_too_narrow_blocks_are_reduced_with_a_warning(caplog):
    rng = np.random.default_rng(1)
    spikes = _spike_table(shifts=np.zeros(6), depths=np.array([40.0, 70.0]), rng=rng)
    est = estimate_drift(spikes, yc=np.arange(0, 120, 20.0), groups=[np.arange(6)],
                         n_batches=6, nblocks=10, spk_th=8.0)
    assert est["dshift"].shape[1] < 19 and "too little for nblocks=10" in caplog.text


# ------------------------------------------------------------------------- the pipeline
def test_kilosort25_runs_datashift_instead_of_reordering():
    names = [s.name for s in pipeline_steps(resolve_params(drift_correction=True))]
    assert "datashift" in names and "reorder" not in names
    assert "datashift" not in [s.name for s in pipeline_steps(resolve_params())]


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    """A two-column 32-channel probe drifting rigidly by +-20 um, sorted with datashift."""
    folder = tmp_path_factory.mktemp("drift")
    rec = make_synthetic_recording(folder / "rec.bin", n_channels=32, n_units=10, duration_s=30,
                                   seed=5, drift="rigid", drift_um=20.0, drift_period_s=20.0,
                                   layout="two_column", pitch_um=25.0)
    ctx = run(rec.bin_path, probe=str(rec.probe_path), dir_path=folder / "ks", device="cpu",
              drift_correction=True, NT=65536 - 64)
    return rec, ctx


def test_estimated_drift_follows_the_imposed_one(drifting):
    rec, ctx = drifting
    p, d = ctx.params, np.asarray(ctx.intermediate.dshift)
    tb = (np.arange(d.shape[0]) + 0.5) * p.NT / p.fs
    imposed = np.interp(tb, rec.drift_times, rec.drift[:, 0])
    est = -d.mean(axis=1)   # dshift undoes the displacement
    est, imposed = est - est.mean(), imposed - imposed.mean()
    assert np.corrcoef(est, imposed)[0, 1] >= 0.95
    assert np.sqrt(np.mean((est - imposed) ** 2)) <= 5.0


def test_drift_corrected_sorting_recovers_the_units(drifting):
    rec, ctx = drifting
    c = compare_to_ground_truth(true_times=rec.spike_times, true_units=rec.spike_clusters,
                                times=ctx.spike_times, clusters=ctx.spike_clusters, fs=rec.fs)
    acc = np.array([c.agreement[u, b] if b >= 0 else 0 for u, b in enumerate(c.best)])
    assert (acc >= 0.8).sum() >= 8, acc


def test_drift_outputs_and_figure(drifting):
    _, ctx = drifting
    out = ctx.output_dir
    dshift = np.load(out / "drift.um.npy")
    assert dshift.shape == np.asarray(ctx.intermediate.dshift).shape == (14, 9)
    assert np.load(out / "drift_depths.um.npy").shape == (9,)
    times = np.load(out / "drift.times.npy")
    np.testing.assert_allclose(np.diff(times), ctx.params.NT / ctx.params.fs)
    assert (out / "drift.png").stat().st_size > 10_000
    iorig = np.asarray(ctx.intermediate.iorig)
    assert np.all(np.diff(dshift.mean(axis=1)[iorig]) >= 0)  # batches sorted by drift


def test_spikes_come_one_pass_in_time_order_without_holes(drifting):
    """v2.5.2's trackAndSort: batches in time order, each keeping the spikes of its own NT
    samples (read with ntbuff of padding on both sides: no spike holes at batch edges)."""
    rec, ctx = drifting
    st3 = np.asarray(ctx.checkpoint("learn", "st3"))
    p = ctx.params
    assert np.all(np.diff(st3["batch"]) >= 0)
    own = (st3["time"] - ctx.derived.nt0min - 1 - p.ntbuff) // p.NT
    np.testing.assert_array_equal(st3["batch"], own)
    phase = (np.sort(ctx.spike_times) % p.NT)
    counts = np.histogram(phase, bins=16, range=(0, p.NT))[0]
    assert counts.min() > 0.5 * counts.mean()


def test_shifted_proc_is_a_new_file_and_the_raw_proc_is_kept(drifting):
    _, ctx = drifting
    shifted = ctx.intermediate.proc
    raw_proc = ctx.checkpoint("preprocess", "proc")
    assert shifted.name == "proc_shifted.dat" and raw_proc.name == "proc.dat"
    assert shifted.stat().st_size == raw_proc.stat().st_size
    a = np.fromfile(shifted, np.int16)
    b = np.fromfile(raw_proc, np.int16)
    assert np.mean(a != b) > 0.5


def test_a_run_killed_while_shifting_leaves_no_shifted_file(tmp_path, monkeypatch):
    rec = make_synthetic_recording(tmp_path / "rec.bin", n_channels=32, n_units=6,
                                   duration_s=8, seed=2, drift="rigid", drift_um=10.0)
    kw = dict(probe=str(rec.probe_path), dir_path=tmp_path / "ks", device="cpu",
              drift_correction=True, NT=16384 - 64, stop_after="datashift")
    calls = []
    real = drift_mod.shift_batch

    def dies_on_third_batch(**kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(**kwargs)

    monkeypatch.setattr(drift_mod, "shift_batch", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run(rec.bin_path, **kw)
    folder = next((tmp_path / "ks" / ".kilosort").iterdir())
    assert not list(folder.glob("proc_shifted*"))
    assert "datashift" not in json.loads((folder / "manifest.json").read_text())["steps"]
    monkeypatch.setattr(drift_mod, "shift_batch", real)
    ctx = run(rec.bin_path, **kw)
    assert ctx.steps_run == ["datashift"] and ctx.intermediate.proc.name == "proc_shifted.dat"


def test_nblocks_zero_sorts_without_correction(tmp_path):
    rec = make_synthetic_recording(tmp_path / "rec.bin", n_channels=32, n_units=6,
                                   duration_s=8, seed=2)
    ctx = run(rec.bin_path, probe=str(rec.probe_path), dir_path=tmp_path / "ks", device="cpu",
              drift_correction=True, nblocks=0, NT=16384 - 64, stop_after="datashift")
    it = ctx.intermediate
    assert "dshift" not in it and it.proc.name == "proc.dat"
    np.testing.assert_array_equal(it.iorig, np.arange(int(it.Nbatch)))


def test_rez_mat_holds_the_drift_fields_in_matlab_convention(drifting):
    import scipy.io

    _, ctx = drifting
    rez = scipy.io.loadmat(ctx.output_dir / "rez.mat", squeeze_me=True)["rez"]
    it = ctx.intermediate
    np.testing.assert_array_equal(rez["dshift"].item(), it.dshift)
    np.testing.assert_array_equal(rez["iorig"].item(), np.asarray(it.iorig) + 1)
    st0 = rez["st0"].item()
    assert st0.shape == (np.asarray(it.st0).shape[0], 6)
    np.testing.assert_array_equal(st0[:, 4], np.asarray(it.st0)[:, 4] + 1)  # 1-based batch
    F = rez["F"].item()
    assert F.shape[1:] == (20, 14)
    np.testing.assert_allclose((2.0 ** F - 1).sum(), st0.shape[0])  # log2(1 + counts) of all


def test_demo_with_drift_reports_the_estimate(tmp_path, capsys):
    from pykilosort.cli import main as cli_main

    code = cli_main(["demo", "--output", str(tmp_path), "--channels", "64", "--units", "16",
                     "--duration", "30", "--device", "cpu", "--drift", "rigid", "--nt", "65472"])
    out = capsys.readouterr().out
    assert code == 0 and "rigid drift" in out
    r = float(out.split("r = ")[1].split(",")[0])
    assert r >= 0.95, out
    assert (tmp_path / "rigid" / "output" / "drift.png").is_file()
