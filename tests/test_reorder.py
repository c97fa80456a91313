"""KS2 batch reordering end to end: the batch embedding follows the probe's drift."""
import numpy as np
import pytest

from pykilosort import make_synthetic_recording, run


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drift")
    rec = make_synthetic_recording(folder / "rec.bin", n_channels=32, n_units=16, duration_s=45.0,
                                   seed=3, drift="rigid", drift_um=20.0)
    return rec


def _drift_per_batch(rec, ctx):
    nb, nt = int(ctx.intermediate.Nbatch), ctx.params.NT
    centres = (np.arange(nb) + 0.5) * nt / rec.fs
    return np.interp(centres, rec.drift_times, rec.drift[:, 0])


def test_embedding_follows_drift_and_order_is_deterministic(drifting, tmp_path):
    kw = dict(probe=drifting.probe, device="cpu", stop_after="reorder")
    a = run(drifting.bin_path, dir_path=tmp_path / "a", **kw)
    b = run(drifting.bin_path, dir_path=tmp_path / "b", **kw)
    drift = _drift_per_batch(drifting, a)
    assert drift.max() - drift.min() > 30  # the recording really drifts by ~40 um
    assert abs(np.corrcoef(a.intermediate.xs, drift)[0, 1]) > 0.9  # measured 0.996 on 60 s
    assert sorted(a.intermediate.iorig.tolist()) == list(range(int(a.intermediate.Nbatch)))
    np.testing.assert_array_equal(a.intermediate.iorig, b.intermediate.iorig)
    np.testing.assert_array_equal(a.intermediate.ccb, b.intermediate.ccb)
    # sorted by the embedding, neighbouring batches have similar drift
    sorted_drift = drift[np.asarray(a.intermediate.iorig)]
    assert np.abs(np.diff(sorted_drift)).mean() < 0.5 * np.abs(np.diff(drift)).mean() + 2


def test_reorder_off_keeps_time_order(drifting, tmp_path):
    ctx = run(drifting.bin_path, probe=drifting.probe, dir_path=tmp_path, device="cpu", reorder=False)
    np.testing.assert_array_equal(ctx.intermediate.iorig, np.arange(int(ctx.intermediate.Nbatch)))


def test_matlab_compat_clusters_the_second_last_batch_twice(drifting, tmp_path):
    ctx = run(drifting.bin_path, probe=drifting.probe, dir_path=tmp_path, device="cpu",
              matlab_compat=True)
    assert sorted(ctx.intermediate.iorig.tolist()) == list(range(int(ctx.intermediate.Nbatch)))
    assert np.isfinite(ctx.intermediate.ccb).all()


def test_reorder_figure_is_written(drifting, tmp_path):
    ctx = run(drifting.bin_path, probe=drifting.probe, dir_path=tmp_path, device="cpu")
    png = tmp_path / "output" / "reorder.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "xs" in ctx.intermediate


def test_kilosort25_mode_orders_batches_by_drift_instead(drifting, tmp_path):
    ctx = run(drifting.bin_path, probe=drifting.probe, dir_path=tmp_path, device="cpu",
              drift_correction=True, stop_after="datashift")
    it = ctx.intermediate
    assert "reorder" not in ctx.steps_run and "xs" not in it and "ccb" not in it
    np.testing.assert_array_equal(it.iorig, np.argsort(it.dshift.mean(axis=1), kind="stable"))
