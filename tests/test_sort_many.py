"""sort_many on a real distributed.LocalCluster (2 worker processes): results identical to sorting
each recording alone, a broken recording failing alone, a killed worker costing only its own job,
resubmission finishing what failed; run-many on the command line; SpikeInterface's
run_sorter_jobs with the dask and joblib engines (issue 13)."""
import json
import os
import signal
import threading
import time

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster

from pykilosort import run, sort_many
from pykilosort.cli import main as cli_main
from pykilosort.errors import ParameterError
from pykilosort.many import JOB_RECORD, read_jobs
from pykilosort.probes import Probe
from pykilosort.synthetic import make_synthetic_recording

PHY = ("spike_times.npy", "spike_clusters.npy", "amplitudes.npy", "templates.npy",
       "pc_features.npy", "cluster_KSLabel.tsv")


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many_data")
    short = make_synthetic_recording(folder / "a.bin", n_channels=32, n_units=8, duration_s=8.7,
                                     seed=3)
    # longer, so that a worker can be killed in the middle of it
    long = make_synthetic_recording(folder / "b.bin", n_channels=32, n_units=8, duration_s=26.0,
                                    seed=4)
    return {"a": short, "b": long}


@pytest.fixture(scope="module")
def alone(recs, tmp_path_factory):
    """Each recording sorted by a plain run() in this process (all cores)."""
    out = {}
    for name, rec in recs.items():
        folder = tmp_path_factory.mktemp(f"alone_{name}")
        run(rec.bin_path, probe=rec.probe, dir_path=folder, device="cpu")
        out[name] = folder / "output"
    return out


def _job(rec, folder, name, **kw):
    return {"dat_path": str(rec.bin_path), "probe": rec.probe, "output_dir": str(folder / name),
            "device": "cpu", **kw}


def _assert_same_sorting(folder, reference):
    for name in PHY:
        a, b = folder / name, reference / name
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(a), np.load(b), err_msg=name)
        else:
            assert a.read_bytes() == b.read_bytes(), name


@pytest.fixture(scope="module")
def cluster():
    # allowed-failures 0: a task whose worker dies fails at once (KilledWorker) instead of being
    # retried elsewhere, so the kill test sees the failure row and then the resubmission
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=0,
                          dashboard_address=None) as cl, Client(cl) as client:
            yield client


def test_jobs_sort_as_alone_and_a_broken_one_fails_alone(recs, alone, cluster, tmp_path):
    bad_probe = Probe(NchanTOT=31, chanMap=np.arange(31), xc=np.zeros(31),
                      yc=20.0 * np.arange(31))
    jobs = [_job(recs["a"], tmp_path, "a"), _job(recs["a"], tmp_path, "broken", probe=bad_probe),
            _job(recs["b"], tmp_path, "b")]
    rows = sort_many(jobs, client=cluster, n_threads=1)
    assert [r["name"] for r in rows] == ["a", "broken", "b"]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "31" in rows[1]["error"] and "channel" in rows[1]["error"].lower()
    for r in (rows[0], rows[2]):
        assert r["wall_s"] > 0 and r["peak_rss_mib"] > 50 and r["n_good"] > 0
    _assert_same_sorting(tmp_path / "a", alone["a"])
    _assert_same_sorting(tmp_path / "b", alone["b"])
    table = json.loads((tmp_path / "sort_many.json").read_text())
    assert [t["status"] for t in table] == ["ok", "failed", "ok"]
    csv_lines = (tmp_path / "sort_many.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,status,wall_s") and len(csv_lines) == 4
    assert json.loads((tmp_path / "broken" / JOB_RECORD).read_text())["status"] == "failed"

    # resubmitted: only the failed job runs again (and fails again: nothing changed for it)
    again = sort_many(jobs, client=cluster, n_threads=1)
    assert [r["status"] for r in again] == ["up to date", "failed", "up to date"]
    # a changed parameter makes a finished job run again
    jobs[0]["params"] = {"Th": [9, 3]}
    changed = sort_many(jobs[:1], client=cluster, n_threads=1)
    assert changed[0]["status"] == "ok"


def test_a_killed_worker_costs_only_its_job_and_resubmission_finishes_it(recs, alone, cluster,
                                                                         tmp_path):
    jobs = [_job(recs["b"], tmp_path, "b"), _job(recs["a"], tmp_path, "a")]
    manifest = None
    killed = threading.Event()

    def kill_when_b_is_half_done():
        nonlocal manifest
        deadline = time.time() + 120
        while time.time() < deadline and not killed.is_set():
            found = list((tmp_path / "b").glob(".kilosort/*/manifest.json"))
            if found and "preprocess" in json.loads(found[0].read_text())["steps"]:
                manifest = found[0]
                for addr, keys in cluster.processing().items():
                    if any(str(k).startswith("pykilosort-b-") for k in keys):
                        pid = cluster.run(os.getpid, workers=[addr])[addr]
                        os.kill(pid, signal.SIGKILL)
                        killed.set()
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_b_is_half_done)
    killer.start()
    rows = sort_many(jobs, client=cluster, n_threads=1)
    killed.set()
    killer.join()
    assert manifest is not None, "job b never got past preprocessing"
    assert rows[0]["status"] == "failed" and "KilledWorker" in rows[0]["error"]
    assert rows[1]["status"] == "ok"
    _assert_same_sorting(tmp_path / "a", alone["a"])
    assert not (tmp_path / "b" / "params.py").exists()  # no half-written phy folder

    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    again = sort_many(jobs, client=cluster, n_threads=1)
    assert [r["status"] for r in again] == ["ok", "up to date"]
    steps = json.loads(manifest.read_text())["steps"]
    assert steps["preprocess"]["wall_s"] > 0  # kept from the killed run: resumed, not redone
    _assert_same_sorting(tmp_path / "b", alone["b"])


def test_run_many_reads_a_table_and_reports_up_to_date_jobs(recs, tmp_path, capsys):
    import scipy.io

    from pykilosort.many import run_job

    p = recs["a"].probe
    chan_map = tmp_path / "chanMap.mat"
    scipy.io.savemat(chan_map, {"chanMap": p.chanMap + 1.0, "xcoords": p.xc, "ycoords": p.yc,
                                "kcoords": p.kcoords + 1.0, "connected": np.ones(p.Nchan),
                                "NchanTOT": float(p.NchanTOT)})
    table = tmp_path / "jobs.csv"
    out = tmp_path / "out"
    table.write_text("dat_path,probe,output_dir,device,params\n"
                     f'{recs["a"].bin_path},{chan_map},{out / "a"},cpu,"{{""Th"": [10, 4]}}"\n')
    jobs = read_jobs(table)
    assert jobs[0]["params"] == {"Th": [10, 4]} and jobs[0]["probe"] == str(chan_map)
    # sorted once here: run-many then finds the job up to date and starts no worker for it
    assert run_job({**jobs[0], "name": "a"})["status"] == "ok"
    assert cli_main(["run-many", str(table), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "a\tup to date" in printed and "1 of 1 jobs sorted (0 failed)" in printed
    assert (out / "sort_many.csv").exists() and (out / "a" / "params.py").exists()


def test_bad_job_tables_are_refused_with_the_fix(tmp_path):
    table = tmp_path / "jobs.csv"
    table.write_text("dat_path,probe,output_dir,params\nx.bin,neuropixels1,out,{Th: 3}\n")
    with pytest.raises(ParameterError, match="JSON object"):
        read_jobs(table)
    with pytest.raises(ParameterError, match="output_dir"):
        sort_many([{"dat_path": "x.bin", "probe": "neuropixels1"}])
    with pytest.raises(ParameterError, match="unknown field"):
        sort_many([{"dat_path": "x.bin", "output_dir": "o", "Th": [9, 3]}])
    with pytest.raises(ParameterError, match="own output_dir|used twice"):
        sort_many([{"dat_path": "x.bin", "output_dir": "o"}, {"dat_path": "y.bin", "output_dir": "o"}])


@pytest.mark.parametrize("engine", ["dask", "joblib"])
def test_spikeinterface_run_sorter_jobs(engine, recs, alone, cluster, tmp_path):
    import spikeinterface.core as si
    from spikeinterface.sorters import run_sorter_jobs

    from pykilosort.spikeinterface_sorter import joblib_backend, register

    rec = recs["a"]
    recording = si.read_binary(rec.bin_path, sampling_frequency=rec.fs, dtype="int16",
                               num_channels=rec.probe.NchanTOT)
    recording.set_dummy_probe_from_locations(np.stack([rec.probe.xc, rec.probe.yc], axis=1))
    jobs = [{"sorter_name": "pykilosort", "recording": recording, "folder": tmp_path / f"s{i}",
             "device": "cpu", "n_threads": 1} for i in range(2)]
    if engine == "dask":
        register(client=cluster)
        run_sorter_jobs(jobs, engine="dask", engine_kwargs={"client": cluster})
    else:
        run_sorter_jobs(jobs, engine="joblib",
                        engine_kwargs={"n_jobs": 2, "backend": joblib_backend()})
    for i in range(2):
        _assert_same_sorting(tmp_path / f"s{i}" / "sorter_output" / "output", alone["a"])
