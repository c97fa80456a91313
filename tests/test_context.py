"""Checkpoints: skip only on a matching key, rerun exactly what a change affects, resume after a
kill, detect damaged files, clear_context, stop_after, load_context."""
import json
import logging
import sys

import numpy as np
import pytest

import pykilosort.preprocess as preprocess_module
from pykilosort import load_context, load_sorting, run
from pykilosort.errors import ContextError, ParameterError
from pykilosort.utils import atomic_path, save_npy_atomic

from conftest import linear_probe, write_noise_with_spikes

ALL = ["good_channels", "whitening", "preprocess", "reorder"]
FAST = dict(NT=8192, nSkipCov=2, device="cpu", stop_after="reorder")


@pytest.fixture
def rec(tmp_path):
    path = write_noise_with_spikes(tmp_path / "rec.bin", n_samples=60000, n_channels=8)
    return path, linear_probe(8)


def _run(rec, **kw):
    path, probe = rec
    return run(path, probe=probe, **{**FAST, **kw})


def _folder(rec):
    """Where a run without dir_path keeps its intermediates: in the output folder."""
    return rec[0].parent / "output" / ".kilosort" / "rec"


def test_second_run_skips_everything_and_loads_outputs(rec):
    first = _run(rec)
    assert first.steps_run == ALL
    second = _run(rec)
    assert second.steps_run == []
    np.testing.assert_array_equal(second.intermediate.Wrot, first.intermediate.Wrot)
    assert second.intermediate.Nbatch == first.intermediate.Nbatch


@pytest.mark.parametrize("change, expected", [
    (dict(minfr_goodchannels=0.5), ALL),                    # read by the first step
    (dict(fshigh=300.0), ALL),                              # read by all three
    (dict(nSkipCov=3), ["whitening", "preprocess", "reorder"]),
    (dict(scaleproc=100.0), ["whitening", "preprocess", "reorder"]),
    (dict(ThPre=7.0), ["reorder"]),                         # read only by the last step
    (dict(Th=(9.0, 3.0), lam=5.0), []),                     # read only by later (unported) steps
    (dict(trange=(0.0, 1.5)), ALL),                         # an input: changes the base key
])
def test_changed_parameter_reruns_exactly_the_steps_reading_it_and_after(rec, change, expected):
    _run(rec)
    assert _run(rec, **change).steps_run == expected
    assert _run(rec, **change).steps_run == []  # and then it is up to date


def test_changed_probe_or_data_reruns_all(rec, tmp_path):
    path, probe = rec
    _run(rec)
    moved = linear_probe(8)
    moved = type(moved)(NchanTOT=8, chanMap=moved.chanMap, xc=moved.xc, yc=moved.yc * 2)
    assert run(path, probe=moved, **FAST).steps_run == ALL
    write_noise_with_spikes(path, n_samples=60000, n_channels=8, seed=1)
    assert _run(rec).steps_run == ALL


def test_killed_mid_step_resumes_at_that_step(rec, monkeypatch):
    original = preprocess_module.write_proc

    def crash_midway(ctx, wrot, path):
        with open(path, "wb") as f:
            f.write(b"\1" * 1000)  # half a proc file...
        raise KeyboardInterrupt("killed")  # ...then the user hits Ctrl-C

    monkeypatch.setattr(preprocess_module, "write_proc", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        _run(rec)
    folder = _folder(rec)
    assert not (folder / "proc.dat").exists(), "a half-written proc file was left under its real name"
    assert not list(folder.glob(".*.tmp")), "temporary files were left behind"
    monkeypatch.setattr(preprocess_module, "write_proc", original)
    assert _run(rec).steps_run == ["preprocess", "reorder"]


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8), "corrupted"),
    (lambda p: p.unlink(), "missing"),
])
def test_damaged_checkpoint_is_recomputed_with_warning(rec, caplog, damage, words):
    _run(rec)
    damage(_folder(rec) / "Wrot.npy")
    with caplog.at_level(logging.WARNING, logger="pykilosort"):
        ctx = _run(rec)
    assert ctx.steps_run == ["whitening"]  # later keys are unchanged: later steps stay valid
    assert any(words in r.getMessage() and "Wrot.npy" in r.getMessage() for r in caplog.records)


def test_damaged_proc_file_reruns_preprocess(rec):
    _run(rec)
    proc = _folder(rec) / "proc.dat"
    with open(proc, "r+b") as f:
        f.truncate(proc.stat().st_size // 2)
    assert _run(rec).steps_run == ["preprocess"]


def test_unreadable_manifest_recomputes_all(rec, caplog):
    _run(rec)
    (_folder(rec) / "manifest.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="pykilosort"):
        assert _run(rec).steps_run == ALL
    assert any("manifest" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)


def test_clear_context_and_stop_after(rec):
    assert _run(rec, stop_after="good_channels").steps_run == ["good_channels"]
    assert _run(rec, stop_after="whitening").steps_run == ["whitening"]
    assert _run(rec, clear_context=True).steps_run == ALL
    with pytest.raises(ParameterError, match=r"'datashift': this run \(drift_correction=False"):
        _run(rec, stop_after="datashift")
    with pytest.raises(ParameterError, match=r"'split_amplitude': this run \(drift_correction=True"):
        _run(rec, stop_after="split_amplitude", drift_correction=True)
    with pytest.raises(ParameterError, match=r"'lern' is not a step"):
        _run(rec, stop_after="lern")


def test_load_context_exposes_rez_fields(rec):
    ctx = _run(rec)
    loaded = load_context(rec[0].parent)
    for name in ("igood", "Wrot", "chanMap", "xc", "yc", "kcoords", "proc", "Nbatch"):
        assert name in loaded.intermediate, name
    np.testing.assert_array_equal(loaded.intermediate.Wrot, ctx.intermediate.Wrot)
    assert loaded.params == ctx.params and loaded.probe == ctx.probe
    assert load_context(ctx.path).intermediate.Nbatch == ctx.intermediate.Nbatch
    assert loaded.intermediate.Wrot.flags.f_contiguous  # MATLAB column-major on disk


def test_load_context_errors(tmp_path):
    with pytest.raises(ContextError, match="no pykilosort run found"):
        load_context(tmp_path)


def test_save_temp_files_false_removes_intermediates_but_keeps_the_sorting(rec):
    ctx = _run(rec, save_temp_files=False, stop_after=None)
    assert not ctx.path.exists()
    out = rec[0].parent / "output"
    sorting = load_sorting(out)
    np.testing.assert_array_equal(sorting.spike_times, ctx.spike_times)
    assert (out / "params.json").exists() and (out / "rez.mat").exists()


def test_save_temp_files_false_keeps_intermediates_of_a_run_stopped_early(rec, caplog):
    with caplog.at_level(logging.WARNING, logger="pykilosort"):
        ctx = _run(rec, save_temp_files=False)  # stops after reorder: nothing exported yet
    assert ctx.path.exists() and (ctx.path / "manifest.json").exists()
    assert any("save_temp_files=False is ignored" in r.getMessage() for r in caplog.records)


def test_atomic_writes_leave_old_file_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    save_npy_atomic(target, np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_manifest_records_time_and_memory(rec):
    ctx = _run(rec)
    manifest = json.loads((ctx.path / "manifest.json").read_text())
    for step in ALL:
        record = manifest["steps"][step]
        assert record["wall_s"] >= 0 and record["peak_rss_mib"] > 0 and len(record["key"]) == 16


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a step's own peak needs Linux")
def test_manifest_memory_is_each_steps_own_peak(rec):
    """A light step after a hungry one records its own peak memory, not the process's so far
    (which would hide the step that needs the memory); the process's peak is still kept."""
    from pykilosort.logs import peak_rss_mib
    from pykilosort.pipeline import Step, run_steps

    def hungry(ctx):
        return {"hungry_sum": float(np.ones(300 * 2**20 // 8).sum())}  # 300 MiB for a moment

    ctx = _run(rec)
    run_steps(ctx, [Step("hungry", hungry), Step("light", lambda ctx: {"light_value": 1.0})])
    steps = json.loads((ctx.path / "manifest.json").read_text())["steps"]
    assert steps["hungry"]["peak_rss_mib"] > steps["light"]["peak_rss_mib"] + 250, steps
    assert steps["light"]["peak_rss_scope"] == "step"
    hungry_peak = steps["hungry"]["peak_rss_mib"]  # rounded to 0.1 MiB
    assert round(peak_rss_mib(), 1) >= hungry_peak > peak_rss_mib(since_reset=True) + 250


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_results_honour_the_umask(rec, umask):
    """Checkpoints and the output folder's files are written through temporary files (mkstemp
    makes them 0600): they must end with the permissions the user's umask gives any new file."""
    import os

    old = os.umask(umask)
    try:
        ctx = _run(rec, stop_after="whitening")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for path in [ctx.path / "Wrot.npy", ctx.path / "manifest.json",
                 rec[0].parent / "output" / "recording.json"]:
        assert path.stat().st_mode & 0o777 == expected, (path.name, oct(path.stat().st_mode))
