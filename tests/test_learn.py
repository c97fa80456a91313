"""learnTemplates on a synthetic recording: invariants, determinism and a ground-truth sanity
check (the accuracy benchmark comes with spike extraction)."""
import numpy as np
import pytest

from pykilosort import make_synthetic_recording, run
from pykilosort.learn import learn_templates, learning_order


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learn")
    rec = make_synthetic_recording(folder / "rec.bin", n_channels=32, n_units=12, duration_s=40.0,
                                   seed=5)
    ctx = run(rec.bin_path, probe=rec.probe, dir_path=folder, device="cpu", stop_after="reorder")
    order = learning_order(np.asarray(ctx.intermediate.iorig))
    return rec, ctx, order, learn_templates(ctx, order), learn_templates(ctx, order)


def test_learning_order_is_half_back_and_forth():
    np.testing.assert_array_equal(learning_order(np.array([4, 2, 0, 1, 3])), [0, 2, 4, 4, 2, 0])
    np.testing.assert_array_equal(learning_order(np.array([7, 5])), [7, 7])


def test_shapes_and_invariants(learned):
    rec, ctx, _, rez, _ = learned
    nt0, nchan = ctx.params.nt0, ctx.probe_good.Nchan
    nfilt = rez["W"].shape[1]
    assert rez["W"].shape == (nt0, nfilt, 3) and rez["U"].shape == (nchan, nfilt, 3)
    assert rez["dWU"].shape == (nt0, nchan, nfilt) and rez["Wraw"].shape == (nchan, nt0, nfilt)
    assert 1 <= nfilt <= ctx.params.nfilt_factor * nchan
    assert rez["simScore"].shape == (nfilt, nfilt) and rez["iNeigh"].shape == (min(nchan, 32), nfilt)
    assert np.isfinite(rez["W"]).all() and np.isfinite(rez["U"]).all() and (rez["mu"] > 0).all()
    # every template kept by the final triage fires at least at minFR
    assert (rez["nsp"] >= ctx.params.minFR * ctx.params.NT / ctx.params.fs).all()
    # mexSVDsmall2 normalises W before its sub-sample realignment, which loses a little norm
    norms = np.sqrt((rez["W"] ** 2).sum(axis=0))
    assert np.all((norms > 0.95) & (norms <= 1 + 1e-9)), norms


def test_identical_on_rerun(learned):
    _, _, _, a, b = learned
    for key in ("W", "U", "mu", "dWU", "nsp", "simScore", "iNeigh"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_every_clear_unit_has_a_template_at_its_depth(learned):
    """Sanity, not accuracy: each unit with SNR >= 8 has a template that fires regularly and
    whose best channel is within one 20 um row of the unit's peak site."""
    rec, ctx, _, rez, _ = learned
    best = np.abs(rez["dWU"][ctx.derived.nt0min - 1]).argmax(axis=0)
    active_y = ctx.probe_good.yc[best][rez["nsp"] > 1.0]
    assert active_y.size >= 0.5 * (rec.snr >= 8).sum()
    for u in np.flatnonzero(rec.snr >= 8):
        assert np.abs(active_y - rec.probe.yc[rec.peak_channels[u]]).min() <= 20.0, u
