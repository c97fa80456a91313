"""The CUDA path end to end: run(device="cuda") through preprocessing, batch reordering, template
learning and extraction, against device="cpu" on the same recording (stable mode). Every .cu file
executes here (on the CPU executor where no GPU exists, where the result must be identical)."""
import collections

import numpy as np
import pytest

from pykilosort import make_synthetic_recording, run

from cuda_cpu import executor, plugin

# the rez fields of every step up to learn: filters, whitening, batch order, templates, spikes,
# features, per-batch template compression
FIELDS = ("Wrot", "igood", "ccb", "iorig", "W", "U", "mu", "dWU", "simScore", "iNeigh",
          "iNeighPC", "nsp", "W_a", "W_b", "U_a", "U_b", "muA", "st3", "cProj", "cProjPC")


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda_path")  # 32 channels, 4 batches of NT = 65600
    return make_synthetic_recording(folder / "syn.bin", n_channels=32, n_units=8, duration_s=8.7,
                                    seed=3)


@pytest.mark.gpu(once=True)
def test_cuda_run_equals_cpu_run(rec, tmp_path, monkeypatch):
    launches = collections.Counter()
    if plugin.mode() == "executor":
        call = executor.Kernel.__call__
        monkeypatch.setattr(executor.Kernel, "__call__",
                            lambda self, *a, **k: (launches.update([self.module.name]),
                                                   call(self, *a, **k))[1])
    kw = dict(probe=rec.probe, stop_after="learn", useStableMode=True)
    cpu = run(rec.bin_path, dir_path=tmp_path / "cpu", device="cpu", **kw)
    gpu = run(rec.bin_path, dir_path=tmp_path / "gpu", device="cuda", **kw)
    assert gpu.backend.name == "cuda" and gpu.intermediate.Nbatch == 4
    assert gpu.steps_run == cpu.steps_run == ["good_channels", "whitening", "preprocess",
                                              "reorder", "learn"]
    if plugin.mode() == "executor":
        # every .cu file ran: lfilter, thspkpc, clustering, distances, getspikes, svdsmall,
        # mpnu8 and wtw (modules are named after their first kernel)
        assert len(launches) == 8, launches
        for name in FIELDS:
            np.testing.assert_array_equal(np.asarray(gpu.intermediate[name]),
                                          np.asarray(cpu.intermediate[name]), err_msg=name)
    else:  # a real GPU: CuPy's own reductions may round differently from numpy's
        a, b = np.asarray(cpu.intermediate.st3), np.asarray(gpu.intermediate.st3)
        assert abs(a.size - b.size) <= 0.01 * a.size
        common = np.intersect1d(a["time"], b["time"]).size
        assert common >= 0.98 * a.size, (common, a.size)


@pytest.mark.gpu(once=True)
def test_cuda_datashift_equals_cpu(tmp_path):
    """Kilosort 2.5's datashift on the CUDA path (spikedetector3.cu, the kriging product on the
    device) against the CPU: identical detections, drift and shifted proc file on the executor."""
    rec = make_synthetic_recording(tmp_path / "drift.bin", n_channels=32, n_units=8,
                                   duration_s=2.2, seed=4, drift="rigid", drift_um=10.0)
    kw = dict(probe=rec.probe, stop_after="datashift", drift_correction=True, NT=16384 - 64)
    cpu = run(rec.bin_path, dir_path=tmp_path / "cpu", device="cpu", **kw)
    gpu = run(rec.bin_path, dir_path=tmp_path / "gpu", device="cuda", **kw)
    assert gpu.backend.name == "cuda" and "datashift" in gpu.steps_run
    a, b = np.asarray(cpu.intermediate.st0), np.asarray(gpu.intermediate.st0)
    assert a.shape[0] > 50
    if plugin.mode() == "executor":
        for name in ("st0", "dshift", "yblk", "iorig"):
            np.testing.assert_array_equal(np.asarray(gpu.intermediate[name]),
                                          np.asarray(cpu.intermediate[name]), err_msg=name)
        assert gpu.intermediate.proc.read_bytes() == cpu.intermediate.proc.read_bytes()
    else:  # cuBLAS may sum the kriging product in another order
        assert abs(a.shape[0] - b.shape[0]) <= 0.01 * a.shape[0]
        ca = np.fromfile(cpu.intermediate.proc, np.int16)
        cb = np.fromfile(gpu.intermediate.proc, np.int16)
        assert np.abs(ca.astype(int) - cb).max() <= 1
