"""run() as scripts and SpikeInterface call it, its bad-input errors, its log, and the CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest

from pykilosort import Bunch, run
from pykilosort.backend import cuda_available, get_backend
from pykilosort.cli import main as cli_main, parse_param
from pykilosort.errors import DeviceError, ParameterError, ProbeError, RawDataError

from conftest import linear_probe, write_noise_with_spikes
from test_params import SPIKEINTERFACE_KWARGS

FAST = dict(NT=8192, nSkipCov=2, device="cpu")
PRE = dict(FAST, stop_after="preprocess")  # these tests are about the steps up to the proc file


@pytest.fixture
def dat(tmp_path):
    return write_noise_with_spikes(tmp_path / "rec.bin", n_samples=40000, n_channels=8)


def test_spikeinterface_wrapper_call(dat, tmp_path):
    """The exact call of spikeinterface/sorters/external/pykilosort.py (probe Bunch, params)."""
    locations = np.c_[np.tile([0.0, 32.0], 4), np.arange(8) * 20.0]
    ks_probe = Bunch(n_channels=8, n_channels_tot=8, channel_map=np.arange(8),
                     channel_groups=np.ones(8), xcoords=locations[:, 0], ycoords=locations[:, 1],
                     Nchans=8, NchanTOT=8, chanMap=np.arange(8), kcoords=np.ones(8),
                     xc=locations[:, 0], yc=locations[:, 1], shank=None,
                     channel_labels=np.zeros(8, dtype=int), sample2volt=1e-6)
    params = {**SPIKEINTERFACE_KWARGS, "n_channels": 8, "NT": 8192, "nSkipCov": 2}
    out = tmp_path / "sorter_output"
    ctx = run(dat, dir_path=out, probe=ks_probe, data_dtype="int16", fs=30000.0, stop_after="preprocess",
              **{k: v for k, v in params.items() if k not in ("data_dtype", "fs")})
    assert ctx.steps_run == ["good_channels", "whitening", "preprocess"]
    assert (out / "output" / "pykilosort.log").is_file()  # the wrapper reads dir_path/output
    assert ctx.path.parent == out / ".kilosort"  # intermediates in dir_path
    saved = json.loads((ctx.path / "context.json").read_text())["params"]
    assert saved["fshigh"] == 300.0 and saved["seed"] == 42 and saved["NchanTOT"] == 8


def test_steps_run_with_one_blas_thread_and_the_limit_is_lifted_after(dat, monkeypatch):
    """OpenBLAS's float32 results depend on its thread count (amplitudes 2e-6 apart on an AMD
    EPYC between OPENBLAS_NUM_THREADS=1 and 2), so a sort must not inherit it from its caller."""
    import threadpoolctl

    import pykilosort.main as main

    def blas_threads():
        return {p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"}

    seen = []
    real = main.run_steps

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(main, "run_steps", spy)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # the caller's setting
        before = blas_threads()
        run(dat, probe=linear_probe(8), **PRE)
        assert blas_threads() == before  # restored for the caller
    assert seen == [{1}]


def test_log_file_has_versions_device_params_and_step_costs(dat):
    run(dat, probe=linear_probe(8), **PRE)
    log = (dat.parent / "output" / "pykilosort.log").read_text()
    for needle in ("pykilosort 0.", "numpy ", "numba ", "device: cpu", "resolved params",
                   '"fshigh": 150.0', "step preprocess     done in", "peak memory"):
        assert needle in log, needle


def test_missing_probe(dat):
    with pytest.raises(ProbeError, match=r"no probe given.*pass probe=.*neuropixels1"):
        run(dat, **PRE)


def test_channel_count_disagreement(dat):
    with pytest.raises(ProbeError, match=r"NchanTOT=8 but n_channels=9"):
        run(dat, probe=linear_probe(8), n_channels=9, **PRE)


def test_wrong_channel_count_for_file_size(tmp_path):
    path = tmp_path / "rec.bin"
    np.zeros((1001, 7), np.int16).tofile(path)
    with pytest.raises(RawDataError, match=r"not a whole number of samples for n_channels=8 .*include \[.*7"):
        run(path, probe=linear_probe(8), **PRE)


def test_one_based_channel_map(dat):
    bunch = dict(NchanTOT=8, chanMap=np.arange(1, 9), xc=np.zeros(8), yc=np.arange(8) * 20.0)
    with pytest.raises(ProbeError, match="looks 1-based"):
        run(dat, probe=bunch, **PRE)


def test_unknown_parameter_via_run(dat):
    with pytest.raises(ParameterError, match="Did you mean 'minfr_goodchannels'"):
        run(dat, probe=linear_probe(8), minfr_goodchanels=0.1, **PRE)


def test_nan_samples_are_a_clear_error(tmp_path):
    x = np.random.default_rng(0).standard_normal((30000, 8)).astype(np.float32)
    x[100:200, 3] = np.nan
    x.tofile(tmp_path / "f.bin")
    with pytest.raises(Exception, match=r"non-finite"):
        run(tmp_path / "f.bin", probe=linear_probe(8), dtype="float32", minfr_goodchannels=0, **PRE)


def test_meta_file_gives_channel_count_and_rate(tmp_path):
    path = write_noise_with_spikes(tmp_path / "rec.ap.bin", n_samples=40000, n_channels=8)
    (tmp_path / "rec.ap.meta").write_text("nSavedChans=8\nimSampRate=25000\n")
    ctx = run(path, probe=linear_probe(8), stop_after="good_channels", **FAST)
    assert ctx.params.NchanTOT == 8 and ctx.params.fs == 25000.0


def test_devices():
    assert get_backend("cpu").name == "cpu"
    assert get_backend("auto").name == ("cuda" if cuda_available() else "cpu")
    with pytest.raises(DeviceError, match="not one of"):
        get_backend("tpu")
    if not cuda_available():
        with pytest.raises(DeviceError, match=r"device='cuda' was requested but .*device='cpu'"):
            get_backend("cuda")


def test_parse_param():
    assert parse_param("Th=[10,4]") == ("Th", [10, 4])
    assert parse_param("fshigh=300") == ("fshigh", 300)
    assert parse_param("CAR=False") == ("CAR", False)
    assert parse_param("whiteningRange=inf") == ("whiteningRange", float("inf"))
    with pytest.raises(ParameterError, match="NAME=VALUE"):
        parse_param("fshigh")


def test_cli_run_and_errors(dat, tmp_path, capsys):
    probe_json = tmp_path / "probe.prb"
    probe_json.write_text("channel_groups = {0: {'channels': list(range(8)), 'geometry': "
                          "{i: (0, 20 * i) for i in range(8)}}}\n")
    args = ["run", str(dat), "--probe", str(probe_json), "--n-channels", "8", "--device", "cpu",
            "--param", "NT=8192", "--param", "nSkipCov=2", "--stop-after", "whitening"]
    assert cli_main(args) == 0
    assert "ran: good_channels, whitening" in capsys.readouterr().out
    assert cli_main(args[:-2] + ["--param", "fshigh=-3"]) == 2
    assert "'fshigh'=-3.0 is out of range" in capsys.readouterr().err


def test_cli_info_lists_kernels():
    proc = subprocess.run([sys.executable, "-m", "pykilosort.cli", "info"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "lfilter.cu" in proc.stdout and "device (auto)" in proc.stdout


def test_cli_demo_generates_and_sorts(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--channels", "16", "--units", "8", "--duration", "10",
            "--nt", "8192", "--device", "cpu"]
    assert cli_main(args) == 0
    assert "ran: good_channels, whitening, preprocess, reorder, learn" in capsys.readouterr().out
    assert (out / "synthetic.bin").stat().st_size == 10 * 30000 * 16 * 2
    assert (out / "synthetic_gt.npz").is_file() and (out / "output" / "pykilosort.log").is_file()
    assert (out / ".kilosort" / "synthetic" / "proc.dat").is_file()
    assert (out / ".kilosort" / "synthetic" / "st3.npy").is_file()
    assert cli_main(args) == 0  # a second demo run resumes: nothing to recompute
    assert "ran: nothing, all up to date" in capsys.readouterr().out
