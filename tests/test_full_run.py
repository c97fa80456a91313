"""The complete run: raw binary in, phy folder out. Accuracy floor on a synthetic recording, phylib
and SpikeInterface open the result, resume and re-parameterisation, the CLI and the demo, and
runs killed (SIGKILL) during learning, post-processing and export that finish identically."""
import hashlib
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pykilosort import heap, load_context, load_sorting, make_synthetic_recording, run
from pykilosort.cli import main as cli_main
from pykilosort.errors import ContextError
from pykilosort.evaluate import compare_to_ground_truth
from pykilosort.export import PHY_FILES

CPU = dict(device="cpu")
POST = ["merges", "split_svd", "split_amplitude", "cutoff"]


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    return make_synthetic_recording(folder / "syn.bin", n_channels=32, n_units=16, duration_s=60.0,
                                    seed=0)


@pytest.fixture(scope="module")
def sorted_rec(rec, tmp_path_factory):
    raw_digest = hashlib.sha256(rec.bin_path.read_bytes()).hexdigest()
    out = tmp_path_factory.mktemp("sorted")
    ctx = run(rec.bin_path, probe=rec.probe, dir_path=out, **CPU)
    assert hashlib.sha256(rec.bin_path.read_bytes()).hexdigest() == raw_digest  # read only
    return ctx


def test_accuracy_floor(rec, sorted_rec):
    """>= 80% of the units with SNR >= 5 found at accuracy >= 0.8 (measured: 13 of 16; the three
    others: a unit 13 um from a twin with 0.92 waveform correlation, which learning merged
    with it, and its twin and a neighbour, contaminated)."""
    ctx = sorted_rec
    c = compare_to_ground_truth(true_times=rec.spike_times, true_units=rec.spike_clusters,
                                times=ctx.spike_times, clusters=ctx.spike_clusters, fs=rec.fs)
    strong = rec.snr >= 5
    assert strong.sum() >= 12
    assert (c.accuracy[strong] >= 0.8).mean() >= 0.8
    assert c.redundant_clusters().size <= 1


def test_post_processing_loses_no_unit_that_learning_tracked(rec, sorted_rec):
    learn = np.asarray(sorted_rec.checkpoint("learn", "st3"))
    kw = dict(true_times=rec.spike_times, true_units=rec.spike_clusters, fs=rec.fs)
    before = compare_to_ground_truth(times=learn["time"], clusters=learn["template"], **kw).accuracy
    after = compare_to_ground_truth(times=sorted_rec.spike_times,
                                    clusters=sorted_rec.spike_clusters, **kw).accuracy
    tracked = before >= 0.8
    assert tracked.sum() >= 12
    assert np.all(after[tracked] >= 0.8), (before, after)


def test_run_returns_the_sorting_and_writes_phy_files(sorted_rec):
    ctx = sorted_rec
    assert ctx.steps_run[-4:] == POST
    s = load_sorting(ctx.output_dir)
    np.testing.assert_array_equal(s.spike_times, ctx.spike_times)
    np.testing.assert_array_equal(s.spike_clusters, ctx.spike_clusters)
    np.testing.assert_array_equal(s.labels, ctx.cluster_labels)
    assert np.all(np.diff(s.spike_times) >= 0)
    assert s.templates.shape[1] == 61 + 20 + 1
    for name in PHY_FILES + ("rez.mat", "pykilosort.log", "params.json", "recording.json"):
        assert (ctx.output_dir / name).is_file(), name
    assert not list(ctx.output_dir.glob(".export-*"))
    assert not (ctx.path / "features_tmp").exists()  # the extraction's scratch folder is removed
    log = (ctx.output_dir / "pykilosort.log").read_text()
    assert re.search(r"export done in [\d.]+ s, peak memory \d+ MiB in the export", log)
    assert f"freed memory kept for the next batches (glibc heap): {heap.enabled()}" in log
    assert heap._users == 0  # glibc's defaults are back after the run


def test_phylib_opens_the_folder(sorted_rec):
    from phylib.io.model import load_model

    model = load_model(sorted_rec.output_dir / "params.py")
    try:
        assert model.n_spikes == sorted_rec.spike_times.size
        np.testing.assert_array_equal(model.spike_clusters, sorted_rec.spike_clusters)
        assert model.n_channels == sorted_rec.probe_good.Nchan
        n_near = min(model.n_channels, 32)  # phylib transposes pc_features to (n, ch, pc)
        assert model.features.shape == (model.n_spikes, n_near, 3)
        assert model.traces is not None and model.traces.shape[1] == 32  # the raw file
        labels = model.metadata["KSLabel"]
        assert sorted(set(labels.values())) <= ["good", "mua"]
    finally:
        model.close()


def test_spikeinterface_reads_the_folder(sorted_rec):
    pytest.importorskip("pandas")
    from spikeinterface.extractors import read_kilosort

    sorting = read_kilosort(sorted_rec.output_dir)
    assert sorting.get_num_units() == np.unique(sorted_rec.spike_clusters).size
    total = sum(sorting.get_unit_spike_train(u).size for u in sorting.unit_ids)
    assert total == sorted_rec.spike_times.size
    good = read_kilosort(sorted_rec.output_dir, keep_good_only=True)
    assert good.get_num_units() == (sorted_rec.cluster_labels == "good").sum()


def test_rez_mat_has_matlab_names_and_indices(sorted_rec):
    import scipy.io

    rez = scipy.io.loadmat(sorted_rec.output_dir / "rez.mat", squeeze_me=True,
                           struct_as_record=False)["rez"]
    st3 = rez.st3
    assert st3.shape == (sorted_rec.spike_times.size, 5)
    assert st3[:, 1].min() >= 1 and st3[:, 4].min() >= 1                 # 1-based
    np.testing.assert_array_equal(np.sort(st3[:, 0]), sorted_rec.spike_times)
    assert rez.iNeigh.min() >= 1 and rez.iNeighPC.min() >= 1 and rez.ops.chanMap.min() >= 1
    assert rez.good.size == rez.mu.size and rez.ops.fs == 30000.0


def test_load_context_of_a_finished_run(sorted_rec):
    ctx = load_context(sorted_rec.dir_path)
    np.testing.assert_array_equal(ctx.spike_times, sorted_rec.spike_times)
    np.testing.assert_array_equal(ctx.cluster_labels, sorted_rec.cluster_labels)
    assert ctx.output_dir == sorted_rec.output_dir.resolve()
    np.testing.assert_array_equal(load_sorting(ctx.output_dir).spike_clusters, ctx.spike_clusters)


def test_rerun_skips_everything_and_auc_change_reruns_splits_only(rec, sorted_rec):
    folder = sorted_rec.dir_path
    again = run(rec.bin_path, probe=rec.probe, dir_path=folder, **CPU)
    assert again.steps_run == []
    np.testing.assert_array_equal(again.spike_times, sorted_rec.spike_times)
    changed = run(rec.bin_path, probe=rec.probe, dir_path=folder, AUCsplit=0.8, **CPU)
    assert changed.steps_run == ["split_svd", "split_amplitude", "cutoff"]
    s = load_sorting(changed.output_dir)
    np.testing.assert_array_equal(s.spike_clusters, changed.spike_clusters)


def test_cli_run_and_stop_after(rec, tmp_path, capsys):
    probe = rec.probe_path
    code = cli_main(["run", str(rec.bin_path), "--probe", str(probe), "--dir", str(tmp_path),
                     "--device", "cpu", "--stop-after", "split_svd"])
    assert code == 0 and "intermediates:" in capsys.readouterr().out
    assert not (tmp_path / "output" / "params.py").exists()
    code = cli_main(["run", str(rec.bin_path), "--probe", str(probe), "--dir", str(tmp_path),
                     "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "phy folder:" in out and "ran: split_amplitude, cutoff" in out
    assert load_sorting(tmp_path / "output").spike_times.size > 0


def test_demo_prints_accuracy_table(tmp_path, capsys):
    code = cli_main(["demo", "--output", str(tmp_path), "--channels", "32", "--units", "6",
                     "--duration", "12", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "accuracy" in out and "units found with accuracy >= 0.8" in out
    rows = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert len(rows) == 6
    assert (tmp_path / "output" / "params.py").is_file()


def test_load_sorting_refuses_an_unfinished_folder(tmp_path):
    with pytest.raises(ContextError, match="params.py is missing"):
        load_sorting(tmp_path)


# ------------------------------------------------------------------ killed runs
_KILLER = textwrap.dedent("""
    import os, signal, sys
    import {module} as target
    original, calls = target.{name}, [0]
    def killer(*args, **kwargs):
        calls[0] += 1
        if calls[0] == {at_call}:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    target.{name} = killer
    from pykilosort import run
    from pykilosort.probes import Probe
    import json
    probe = Probe.from_dict(json.loads(open(sys.argv[2]).read()))
    run(sys.argv[1], probe=probe, dir_path=sys.argv[3], device="cpu", AUCsplit={auc})
""")


def _killed_run(rec, folder, *, module, name, at_call, auc=0.9):
    script = _KILLER.format(module=module, name=name, at_call=at_call, auc=auc)
    proc = subprocess.run([sys.executable, "-c", script, str(rec.bin_path), str(rec.probe_path),
                           str(folder)], capture_output=True, text=True,
                          env={**os.environ, "PYKILOSORT_PROGRESS": "0"})
    assert proc.returncode == -9, proc.stderr[-2000:]


def _rss_file_mib() -> float:
    """Resident pages of mapped files in this process (Linux's RssFile), MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RssFile in /proc")
def test_splits_leave_no_memory_mapped_features_resident(sorted_rec, tmp_path):
    """The splits read each cluster's rows of the memory-mapped cProjPC. Pages read stay in the
    resident set unless released: over all clusters the whole file, so memory would grow with the
    recording (issue 12). Here each spike's features sit on a page of their own (rows 16 apart
    in a bigger map), and the splits must still be the pipeline's."""
    from pykilosort.neighbours import get_closest_channels
    from pykilosort.splits import split_all_clusters
    from pykilosort.upsampling import get_kernels

    ctx, spread = sorted_rec, 16
    p, nt0min, probe = ctx.params, ctx.derived.nt0min, ctx.probe_good
    feats = np.asarray(ctx.checkpoint("learn", "cProjPC"))
    big = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.float32,
                                    (feats.shape[0] * spread, *feats.shape[1:]))
    big[::spread] = feats
    del big  # written and closed: read back below through a fresh read-only map
    big = np.load(tmp_path / "f.npy", mmap_mode="r")
    st3 = np.asarray(ctx.checkpoint("merges", "st3"))
    iC, _, _ = get_closest_channels(xc=probe.xc, yc=probe.yc, sigma_mask=p.sigmaMask,
                                    n_closest=min(probe.Nchan, 32))
    ka, kb = get_kernels(nt0=p.nt0, nt0min=nt0min)
    before = _rss_file_mib()
    res = split_all_clusters(
        times=st3["time"], templates=st3["template"], features=big,
        rows=np.arange(st3.size) * spread, dWU=np.asarray(ctx.checkpoint("learn", "dWU")),
        W=np.asarray(ctx.checkpoint("learn", "W")),
        sim=np.asarray(ctx.checkpoint("learn", "simScore")),
        wpca=np.asarray(ctx.checkpoint("learn", "wPCA")), iC=iC, Ka=ka, Kb=kb, fs=p.fs,
        nt0min=nt0min, auc_split=p.AUCsplit, init="svd", running_avg=not ctx.derived.ks25,
        legacy_swap=p.matlab_compat)
    grown = _rss_file_mib() - before
    np.testing.assert_array_equal(res.templates, ctx.checkpoint("split_svd", "st3")["template"])
    pages_mib = st3.size * 4096 / 2**20  # what reading the spikes' features touches
    assert pages_mib > 20 and grown < 0.1 * pages_mib, (grown, pages_mib)


@pytest.mark.parametrize("where", [
    dict(module="pykilosort.learn", name="run_templates", at_call=1),            # learning
    dict(module="pykilosort.postprocess", name="split_all_clusters", at_call=2),  # 2nd split
    dict(module="pykilosort.export", name="_write_features", at_call=2),        # export
])
def test_killed_run_restarts_to_identical_output(rec, sorted_rec, tmp_path, where):
    raw_digest = hashlib.sha256(rec.bin_path.read_bytes()).hexdigest()
    if where["module"] == "pykilosort.export":  # an older export is in the folder when killed
        run(rec.bin_path, probe=rec.probe, dir_path=tmp_path, AUCsplit=0.95, **CPU)
    _killed_run(rec, tmp_path, **where)
    if where["module"] == "pykilosort.export":
        with pytest.raises(ContextError, match="params.py is missing"):
            load_sorting(tmp_path / "output")
    ctx = run(rec.bin_path, probe=rec.probe, dir_path=tmp_path, **CPU)
    for name in PHY_FILES:
        assert (ctx.output_dir / name).read_bytes() == \
            (sorted_rec.output_dir / name).read_bytes(), name
    assert hashlib.sha256(rec.bin_path.read_bytes()).hexdigest() == raw_digest
