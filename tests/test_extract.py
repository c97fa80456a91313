"""Template learning + spike extraction (the `learn` step) against synthetic ground truth."""
import numpy as np
import pytest

from pykilosort import make_synthetic_recording, run
from pykilosort.extract import owned_trough_range

TOL = 15  # 0.5 ms at 30 kHz


def _nearest_distance(a_sorted, b):
    """For each b, distance to the nearest value of a_sorted."""
    i = np.clip(np.searchsorted(a_sorted, b), 1, max(a_sorted.size - 1, 1))
    return np.minimum(np.abs(a_sorted[i - 1] - b), np.abs(a_sorted[np.minimum(i, a_sorted.size - 1)] - b))


def _scores(rec, st3):
    det = np.sort(st3["time"])
    found = _nearest_distance(det, rec.spike_times) <= TOL
    unmatched = _nearest_distance(np.sort(rec.spike_times), det) > TOL
    return found, unmatched


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extract")
    return make_synthetic_recording(folder / "rec.bin", n_channels=32, n_units=16, duration_s=40.0,
                                    seed=3, drift="rigid", drift_um=20.0)


def test_ground_truth_found_and_few_false_detections(drifting, tmp_path):
    ctx = run(drifting.bin_path, probe=drifting.probe, dir_path=tmp_path, device="cpu",
              stop_after="learn")
    st3 = ctx.intermediate.st3
    found, unmatched = _scores(drifting, st3)
    clear = drifting.snr[drifting.spike_clusters] >= 5
    assert found[clear].mean() >= 0.95     # measured 0.998 on 60 s; the issue asks >= 0.9
    assert unmatched.mean() <= 0.05        # measured 0.0; the issue asks <= 0.1
    n = st3.size
    assert ctx.intermediate.cProj.shape == (n, 26) and ctx.intermediate.cProjPC.shape == (n, 3, 26)
    assert np.all(np.diff(st3["batch"]) >= 0)  # batches in the sorted order
    assert set(np.unique(st3["template"])) <= set(range(ctx.intermediate.W.shape[1]))
    # the same input, params and seed: identical spikes
    again = run(drifting.bin_path, probe=drifting.probe, dir_path=tmp_path / "again", device="cpu",
                stop_after="learn")
    np.testing.assert_array_equal(again.intermediate.st3, st3)
    np.testing.assert_array_equal(np.asarray(again.intermediate.cProj), np.asarray(ctx.intermediate.cProj))


def test_owned_ranges_tile_the_recording():
    step, nt0min = 65472 - 64, 20
    ranges = [owned_trough_range(k, nbatch=4, NT=65472, ntbuff=64, nt0=61, nt0min=nt0min)
              for k in range(4)]
    for k in range(1, 3):  # interior batches: contiguous in absolute time, inside what is seen
        assert ranges[k][0] + k * step == ranges[k - 1][1] + (k - 1) * step
        assert nt0min <= ranges[k][0] and ranges[k][1] - 1 <= 65472 - 61 + nt0min
    assert ranges[0][0] == -np.inf and ranges[3][1] == np.inf
    with pytest.raises(ValueError, match="ntbuff=32 must be >= nt0-1=60"):
        owned_trough_range(1, nbatch=3, NT=8192, ntbuff=32, nt0=61, nt0min=20)


@pytest.mark.parametrize("compat", [False, True])
def test_spike_holes(drifting, tmp_path, compat):
    """MouseLand/Kilosort#594: with NT = 64*1024-64 the original never examines template starts in
    the last ~900 samples of each batch, so spikes there are lost (unless the next batch's overlap
    catches them: it covers only ntbuff = 64 samples). We find them; matlab_compat keeps the holes."""
    NT, ntbuff = 64 * 1024 - 64, 64
    ctx = run(drifting.bin_path, probe=drifting.probe, dir_path=tmp_path, device="cpu", NT=NT,
              stop_after="learn", matlab_compat=compat)
    found, _ = _scores(drifting, ctx.intermediate.st3)
    phase = (drifting.spike_times - 20) % (NT - ntbuff)  # template start within its batch
    in_hole = (phase >= 64512 - ntbuff + 61) & (phase < NT - 61 - ntbuff)
    clear = drifting.snr[drifting.spike_clusters] >= 5
    assert (in_hole & clear).sum() >= 20  # enough spikes fall in the holes to measure
    rate = found[in_hole & clear].mean()
    if compat:
        assert rate < 0.5, rate           # the original misses them
    else:
        assert rate >= 0.95, rate         # ours does not
        hist, _ = np.histogram(ctx.intermediate.st3["time"] % (NT - ntbuff), bins=64,
                               range=(0, NT - ntbuff))
        assert hist.min() > 0             # no gap in the spike-time histogram modulo the batch


def test_kilosort25_flow_spike_times_match_ground_truth(drifting, tmp_path):
    """drift_correction=True (KS2.5: consecutive batches of NT without overlap, registered by
    datashift): spikes land at their true times as in the KS2 flow (they were early by 64 k + 63
    samples in batch k before the fix)."""
    ctx = run(drifting.bin_path, probe=drifting.probe, dir_path=tmp_path, device="cpu",
              stop_after="learn", drift_correction=True)
    assert "dshift" in ctx.intermediate
    found, unmatched = _scores(drifting, ctx.intermediate.st3)
    clear = drifting.snr[drifting.spike_clusters] >= 5
    assert found[clear].mean() >= 0.95 and unmatched.mean() <= 0.05
