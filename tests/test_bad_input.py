"""Bad recordings: each works sensibly or stops with a clear error, never a silent NaN."""
import numpy as np
import pytest

from pykilosort import run
from pykilosort.errors import DataQualityError

from conftest import linear_probe, write_noise_with_spikes

FAST = dict(NT=8192, nSkipCov=2, device="cpu")
PRE = dict(FAST, stop_after="preprocess")  # these tests are about the steps up to the proc file


def _finite_outputs(ctx):
    assert np.isfinite(ctx.intermediate.Wrot).all() and np.isfinite(ctx.intermediate.CC).all()
    proc = np.fromfile(ctx.intermediate.proc, np.int16)
    assert proc.size == ctx.intermediate.Nbatch * ctx.params.NT * ctx.probe_good.Nchan
    return proc


def test_all_zero_recording(tmp_path):
    np.zeros((40000, 8), np.int16).tofile(tmp_path / "z.bin")
    with pytest.raises(DataQualityError, match=r"no channel reaches minfr_goodchannels=0.1.*"
                                               r"minfr_goodchannels=0 to keep every channel"):
        run(tmp_path / "z.bin", probe=linear_probe(8), **PRE)
    with pytest.raises(DataQualityError, match=r"zero on every channel \(a flat recording\?\)"):
        run(tmp_path / "z.bin", probe=linear_probe(8), minfr_goodchannels=0, **PRE)


@pytest.mark.parametrize("value", [0, 1234])  # zeros, or a constant (saturated / DC) stretch
def test_flat_stretch_inside_recording(tmp_path, value):
    path = write_noise_with_spikes(tmp_path / "r.bin", n_samples=60000, n_channels=8)
    x = np.fromfile(path, np.int16).reshape(-1, 8)
    x[10000:30000] = value  # longer than a batch: one whole good-channels batch is flat
    x.tofile(path)
    ctx = run(path, probe=linear_probe(8), **PRE)
    proc = _finite_outputs(ctx).reshape(ctx.intermediate.Nbatch, -1, ctx.params.NT)
    assert ctx.intermediate.igood.all()
    assert np.abs(proc[2, :, 2000:6000]).max() <= 1  # the flat stretch stays flat once whitened


def test_dead_channel_kept_when_minfr_is_zero(tmp_path):
    path = write_noise_with_spikes(tmp_path / "r.bin", n_samples=40000, n_channels=8)
    x = np.fromfile(path, np.int16).reshape(-1, 8)
    x[:, 3] = 0
    x.tofile(path)
    ctx = run(path, probe=linear_probe(8), minfr_goodchannels=0, **PRE)
    assert ctx.intermediate.igood.all()
    _finite_outputs(ctx)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", [500, 35000])  # in a good-channels batch, or only later
def test_non_finite_samples_are_a_clear_error(tmp_path, bad, where):
    x = np.random.default_rng(0).standard_normal((40000, 8)).astype(np.float32) * 20
    x[where: where + 10, 6] = bad
    x.tofile(tmp_path / "f.bin")
    with pytest.raises(DataQualityError, match=rf"non-finite samples.*sample {where} on channel row 6"):
        run(tmp_path / "f.bin", probe=linear_probe(8), dtype="float32", minfr_goodchannels=0, **PRE)


@pytest.mark.parametrize("compat", [False, True])
def test_fewer_batches_than_nskipcov(tmp_path, compat):
    path = write_noise_with_spikes(tmp_path / "r.bin", n_samples=3 * 8000, n_channels=8)
    ctx = run(path, probe=linear_probe(8), NT=8192, nSkipCov=25, matlab_compat=compat,
              device="cpu", minfr_goodchannels=0, stop_after="preprocess")
    assert ctx.intermediate.Nbatch == 3
    _finite_outputs(ctx)


@pytest.mark.parametrize("n_samples", [40, 500, 8000])  # < nt0, < one batch, ~ one batch
def test_recording_shorter_than_a_batch(tmp_path, n_samples):
    path = write_noise_with_spikes(tmp_path / "r.bin", n_samples=max(n_samples, 300), n_channels=8,
                                   n_spikes=3)
    np.fromfile(path, np.int16)[: n_samples * 8].tofile(path)
    ctx = run(path, probe=linear_probe(8), minfr_goodchannels=0, **PRE)
    assert ctx.intermediate.Nbatch == 1
    _finite_outputs(ctx)


def test_ks25_on_a_short_recording(tmp_path):
    path = write_noise_with_spikes(tmp_path / "r.bin", n_samples=5000, n_channels=8)
    ctx = run(path, probe=linear_probe(8), drift_correction=True, **PRE)
    assert ctx.intermediate.Nbatch == 1 and ctx.intermediate.igood.all()
    _finite_outputs(ctx)


def test_non_finite_in_ks25_first_batch_names_the_true_sample(tmp_path):
    x = np.random.default_rng(0).standard_normal((20000, 8)).astype(np.float32) * 20
    x[30, 2] = np.nan
    x.tofile(tmp_path / "f.bin")
    with pytest.raises(DataQualityError, match=r"at sample 30 on channel row 2"):
        run(tmp_path / "f.bin", probe=linear_probe(8), dtype="float32", drift_correction=True, **PRE)
