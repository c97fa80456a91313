"""Trustworthy runs (issue 9): no mixed or lost results, folders that work on shared and read-only
storage, results that outlive a moved raw file, and errors that name the real cause."""
import json
import logging
import os
import shutil

import numpy as np
import pytest
import scipy.io

from pykilosort import load_context, run
from pykilosort.cli import main as cli_main
from pykilosort.cli import parse_param
from pykilosort.errors import ContextError, DataQualityError, RawDataError
from pykilosort.params import resolve_params

from conftest import ROOT, linear_probe, write_noise_with_spikes

FAST = dict(NT=8192, nSkipCov=2, device="cpu")
UPTO_REORDER = dict(FAST, stop_after="reorder")


def _rec(path, seed=0, n_samples=60000):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_noise_with_spikes(path, n_samples=n_samples, n_channels=8, seed=seed)


# ------------------------------------------------------------------ results never mixed or lost
def test_load_context_exposes_only_outputs_of_its_own_parameters(tmp_path, caplog):
    dat = _rec(tmp_path / "rec.bin")
    run(dat, probe=linear_probe(8), fshigh=150.0, **UPTO_REORDER)
    new = run(dat, probe=linear_probe(8), fshigh=300.0, **dict(FAST, stop_after="whitening"))
    with caplog.at_level(logging.WARNING, logger="pykilosort"):
        ctx = load_context(tmp_path / "output")
    assert ctx.params.fshigh == 300.0
    np.testing.assert_array_equal(ctx.intermediate.Wrot, new.intermediate.Wrot)
    for stale in ("proc", "iorig", "ccb"):  # fshigh=150 results: not exposed
        assert stale not in ctx.intermediate, stale
    assert ctx.stale_steps == ["preprocess", "reorder"]
    assert any("preprocess, reorder" in r.getMessage() and "not loaded" in r.getMessage()
               for r in caplog.records)
    # the fshigh=150 results are intact: rerunning with those parameters recomputes only what
    # the fshigh=300 run replaced
    back = run(dat, probe=linear_probe(8), fshigh=150.0, **UPTO_REORDER)
    assert back.steps_run == ["good_channels", "whitening"]


def test_recordings_with_the_same_name_keep_separate_results(tmp_path):
    a = _rec(tmp_path / "session1" / "continuous.dat", seed=0)
    b = _rec(tmp_path / "session2" / "continuous.dat", seed=1)
    work = tmp_path / "work"
    ctx_a = run(a, probe=linear_probe(8), dir_path=work, output_dir=tmp_path / "out_a", **UPTO_REORDER)
    ctx_b = run(b, probe=linear_probe(8), dir_path=work, output_dir=tmp_path / "out_b", **UPTO_REORDER)
    assert ctx_a.path != ctx_b.path and ctx_b.path.name == "continuous-2"
    again = run(a, probe=linear_probe(8), dir_path=work, output_dir=tmp_path / "out_a", **UPTO_REORDER)
    assert again.steps_run == [] and again.path == ctx_a.path  # a's results were not replaced
    np.testing.assert_array_equal(again.intermediate.Wrot, ctx_a.intermediate.Wrot)
    assert not np.array_equal(ctx_b.intermediate.Wrot, ctx_a.intermediate.Wrot)
    with pytest.raises(ContextError, match=r"out_a holds the results of another recording"):
        run(b, probe=linear_probe(8), dir_path=work, output_dir=tmp_path / "out_a", **UPTO_REORDER)


def test_intermediates_default_to_the_output_folder(tmp_path):
    dat = _rec(tmp_path / "raw" / "rec.bin")
    ctx = run(dat, probe=linear_probe(8), output_dir=tmp_path / "results", **UPTO_REORDER)
    assert ctx.path == tmp_path / "results" / ".kilosort" / "rec"
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["rec.bin"]


@pytest.mark.parametrize("which, param", [("output_dir", "output_dir"), ("dir_path", "dir_path")])
def test_unwritable_folder_is_named_with_the_parameter_that_moves_it(tmp_path, which, param):
    dat = _rec(tmp_path / "rec.bin")
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder cannot be made inside a file: as unwritable as a RO share
    folders = {"output_dir": tmp_path / "out", which: blocker / "sub"}
    with pytest.raises(ContextError) as info:
        run(dat, probe=linear_probe(8), **folders, **UPTO_REORDER)
    msg = str(info.value)
    assert str(blocker / "sub") in msg and param in msg and "\n" not in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path):
    dat = _rec(tmp_path / "rec.bin")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(ContextError, match=r"cannot write the results to .*ro.*output_dir"):
        run(dat, probe=linear_probe(8), output_dir=ro, **UPTO_REORDER)


def test_results_load_and_resume_after_the_raw_file_moved(tmp_path):
    dat = _rec(tmp_path / "raw" / "rec.bin")
    out = tmp_path / "out"
    first = run(dat, probe=linear_probe(8), output_dir=out, **UPTO_REORDER)
    moved = tmp_path / "elsewhere" / "renamed.bin"
    moved.parent.mkdir()
    dat.rename(moved)
    ctx = load_context(out)
    assert not ctx.raw_data.available and ctx.stale_steps == []
    np.testing.assert_array_equal(ctx.intermediate.iorig, first.intermediate.iorig)
    with pytest.raises(RawDataError, match=r"no longer where this run found it.*current path"):
        ctx.raw_data.read(0, 10)
    again = run(moved, probe=linear_probe(8), output_dir=out, **UPTO_REORDER)
    assert again.steps_run == [] and again.path == first.path


# ------------------------------------------------------------------ errors that name the cause
def test_truncated_file_says_so_and_can_be_sorted_without_its_partial_sample(tmp_path):
    dat = _rec(tmp_path / "rec.bin")
    data = dat.read_bytes()
    dat.write_bytes(data[:-10])
    with pytest.raises(RawDataError, match=r"looks truncated, 10 bytes short.*drop_partial_sample"):
        run(dat, probe=linear_probe(8), **UPTO_REORDER)
    ctx = run(dat, probe=linear_probe(8), drop_partial_sample=True, **dict(FAST, stop_after="good_channels"))
    assert ctx.raw_data.n_samples == 60000 - 1


def test_one_based_mat_channel_map_with_an_extra_entry_names_the_probe(tmp_path):
    dat = _rec(tmp_path / "rec.bin")
    n = 9  # one more entry than the file's 8 channels, 1-based
    scipy.io.savemat(tmp_path / "chanMap.mat", {
        "chanMap": np.arange(1.0, n + 1)[:, None], "xcoords": np.zeros((n, 1)),
        "ycoords": 20.0 * np.arange(n)[:, None], "kcoords": np.ones((n, 1))})
    with pytest.raises(RawDataError) as info:
        run(dat, probe=tmp_path / "chanMap.mat", **UPTO_REORDER)
    msg = str(info.value)
    assert "n_channels=9 (not given: inferred from the probe 'chanMap'" in msg
    assert "8" in msg.split("counts that fit its size include")[1].split("]")[0]


def test_a_folder_stands_for_its_one_raw_file_and_several_are_refused(tmp_path):
    _rec(tmp_path / "data" / "rec.bin")
    ctx = run(tmp_path / "data", probe=linear_probe(8), output_dir=tmp_path / "out",
              **dict(FAST, stop_after="good_channels"))
    assert ctx.raw_data.paths == [tmp_path / "data" / "rec.bin"]
    _rec(tmp_path / "data" / "rec2.bin")
    with pytest.raises(RawDataError, match=r"folder with 2 raw data files \(rec.bin, rec2.bin\)"):
        run(tmp_path / "data", probe=linear_probe(8), output_dir=tmp_path / "out", **UPTO_REORDER)


def test_very_short_recording_says_how_long_it_is_and_what_the_step_needs(tmp_path):
    dat = _rec(tmp_path / "rec.bin", n_samples=300)
    dat.write_bytes(dat.read_bytes()[: 100 * 8 * 2])
    with pytest.raises(DataQualityError, match=r"100 samples .* needs more than 2\*nt0 = 122"):
        run(dat, probe=linear_probe(8), **UPTO_REORDER)


def test_recording_shorter_than_one_batch_is_sorted_with_a_warning(tmp_path, caplog):
    dat = _rec(tmp_path / "rec.bin", n_samples=6000)
    with caplog.at_level(logging.WARNING, logger="pykilosort"):
        ctx = run(dat, probe=linear_probe(8), **UPTO_REORDER)
    assert ctx.intermediate.Nbatch == 1
    assert any("the recording is 0.2 s (6000 samples), shorter than one batch (NT=8192"
               in r.getMessage() for r in caplog.records)


def test_trange_accepts_inf_as_the_readme_writes_it():
    assert resolve_params(trange=[0, "inf"]).trange == (0.0, np.inf)
    assert resolve_params(trange=[0, "Inf"]).trange == (0.0, np.inf)
    assert parse_param("trange=[0,inf]") == ("trange", [0, np.inf])
    assert parse_param("trange=[10, Inf]") == ("trange", [10, np.inf])


# ------------------------------------------------------------------ the command line
def test_cli_error_inside_a_step_prints_one_line_and_exit_2(tmp_path, capsys):
    dat = _rec(tmp_path / "rec.bin", n_samples=300)
    dat.write_bytes(dat.read_bytes()[: 100 * 8 * 2])
    probe = tmp_path / "probe.json"
    _write_probe_json(probe)
    out = tmp_path / "out"
    argv = ["run", str(dat), "--probe", str(probe), "--output", str(out)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "pykilosort: error: no channel reaches minfr_goodchannels" in err
    assert f"traceback in {out / 'pykilosort.log'}" in err
    assert "Traceback (most recent call last)" in (out / "pykilosort.log").read_text()
    assert cli_main(["--debug"] + argv) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_cli_bad_input_before_any_step_exits_2(tmp_path, capsys):
    assert cli_main(["run", str(tmp_path / "missing.bin"), "--probe", "neuropixels1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pykilosort: error: raw data file not found") and "Traceback" not in err


def _write_probe_json(path):
    import probeinterface

    probe = probeinterface.generate_linear_probe(num_elec=8, ypitch=20)
    probe.set_device_channel_indices(np.arange(8))
    probeinterface.write_probeinterface(path, probe)


def test_info_without_gpu_or_nvcc_reports_cpu_twins_not_failures(monkeypatch, capsys):
    import pykilosort.backend as backend

    monkeypatch.setattr(backend, "cuda_available", lambda: False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert "FAILS" not in out and "{" not in out
    assert "mpnu8                          numba twin   available with a GPU" in out
    assert "mpnu8.cu                       not checked: no GPU and no nvcc" in out


# ------------------------------------------------------------------ housekeeping
def test_make_test_all_exists_only_if_some_test_is_marked_slow():
    marked = any("mark.slow" in p.read_text() for p in (ROOT / "tests").glob("test_*.py")
                 if p.name != "test_trust.py")
    assert ("test-all:" in (ROOT / "Makefile").read_text()) == marked


def test_recording_file_of_the_output_folder_describes_the_recording(tmp_path):
    dat = _rec(tmp_path / "rec.bin")
    ctx = run(dat, probe=linear_probe(8), **dict(FAST, stop_after="good_channels"))
    recorded = json.loads((ctx.output_dir / "recording.json").read_text())
    assert recorded["paths"] == [str(dat)] and recorded["n_samples"] == 60000
    assert recorded["fingerprint"] == ctx.raw_data.fingerprint()
