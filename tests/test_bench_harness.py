"""The peer benchmark's harness (benchmarks/): the figures it reports are only as honest as its
process measurement (time limit, memory of a whole process tree) and its bookkeeping."""
import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bench_peers  # noqa: E402
from machine import run_limited  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_memory_of_the_whole_process_tree_is_measured():
    # the parent holds little; its child holds ~300 MiB: only a tree measurement sees it
    child = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    res = run_limited([sys.executable, "-c", parent], timeout_s=60, sample_s=0.1)
    assert res["returncode"] == 0 and not res["timed_out"]
    assert 300 <= res["peak_tree_rss_mib"] < 600


def test_pages_shared_with_forked_workers_count_once_in_pss():
    # a parent fills 200 MiB, then forks two workers that only read it: the summed resident
    # memory counts the pages three times, the proportional set size once
    code = textwrap.dedent("""
        import os, time
        b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])
        pids = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                sum(b[::4096]); time.sleep(2); os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
    """)
    res = run_limited([sys.executable, "-c", code], timeout_s=60, sample_s=0.1)
    assert res["returncode"] == 0
    assert 600 <= res["peak_tree_rss_mib"] < 800
    assert 200 <= res["peak_tree_pss_mib"] < 300


def test_a_sorter_past_its_limit_is_killed_with_its_workers(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        time.sleep(120)
    """)
    t0 = time.perf_counter()
    res = run_limited([sys.executable, "-c", code], timeout_s=2, sample_s=0.1)
    assert res["timed_out"] and res["returncode"] is None
    assert time.perf_counter() - t0 < 20
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # the kill is asynchronous: give the kernel a moment to reap it
        if not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_failures_keep_their_error_text():
    res = run_limited([sys.executable, "-c", "raise SystemExit('probe has 3 channels')"],
                      timeout_s=30)
    assert res["returncode"] == 1 and "probe has 3 channels" in res["stderr_tail"]


@pytest.mark.parametrize("spec", ["static:64", "drifty:64:120", "static:60:120", "static:x:120",
                                  "static:64:120:x", "static:64:120:1:2"])
def test_bad_recording_specs_are_refused(spec):
    with pytest.raises(SystemExit, match="recording"):
        bench_peers.parse_recording(spec)


def test_recording_specs_give_units_and_distinct_seeds():
    a = bench_peers.parse_recording("static:64:120")
    b = bench_peers.parse_recording("rigid:64:120")
    assert (a["n_units"], a["channels"], a["duration"]) == (30, 64, 120.0)
    assert a["seed"] != b["seed"]
    longer = bench_peers.parse_recording(f"static:64:600:{a['seed']}")  # same units, longer
    assert (longer["seed"], longer["duration"], longer["n_units"]) == (a["seed"], 600.0, 30)


def _result(acc, lost=None):
    return {"status": "ok", "accuracy": acc, "units_ge_0.8": sum(a >= 0.8 for a in acc),
            "best_agreement": acc, "diagnosis": {"lost_at": lost or [None] * len(acc),
                                                 "learn_best_agreement": acc, "learn_best_recall": acc,
                                                 "learn_best_precision": acc,
                                                 "fate_after_learn": ["x"] * len(acc)},
            "fate": ["found" if a >= 0.8 else "split over 2" for a in acc]}


def test_where_we_lose_lists_the_units_a_better_peer_finds():
    table = {"snr": [10.0, 3.0, 4.0], "firing_rate_hz": [5.0, 2.0, 3.0]}
    row = {"units_table": table, "sorters": {
        "pykilosort_ks2": _result([0.9, 0.1, 0.5], lost=[None, "learn", "split_svd"]),
        "kilosort4": _result([0.9, 0.95, 0.85]),       # better: two units we miss
        "mountainsort5": _result([0.95, 0.0, 0.0]),    # worse: not listed
        "tridesclous2": {"status": "timeout"},
        "pykilosort_ks2_th8": _result([0.9, 0.95, 0.85])}}  # ours, varied: not a peer
    losses = bench_peers.where_we_lose(row)
    assert [(x["ours"], x["peer"]) for x in losses] == [("pykilosort_ks2", "kilosort4")]
    missed = losses[0]["missed"]
    assert [m["unit"] for m in missed] == [1, 2]
    assert [m["lost_at"] for m in missed] == ["learn", "split_svd"]
    assert [m["snr"] for m in missed] == [3.0, 4.0]


def test_fate_tells_split_mixed_and_undetected_units_apart():
    from spikeinterface.comparison import compare_sorter_to_ground_truth

    k = np.arange(100) * 1000
    truth = bench_peers.sorting_of(np.concatenate([k, k + 300, k + 600, k + 800]),
                                   np.repeat([0, 1, 2, 3], 100), 30000.0)
    # unit 0 in two clusters (even and odd spikes); units 1 and 2 in one; unit 3 in none
    times = np.concatenate([k[::2], k[1::2], k + 300, k + 600])
    clusters = np.repeat([0, 1, 2, 2], [50, 50, 100, 100])
    c = compare_sorter_to_ground_truth(truth, bench_peers.sorting_of(times, clusters, 30000.0),
                                       exhaustive_gt=True)
    assert [bench_peers.fate(c, u) for u in range(4)] == ["split over 2", "mixed", "mixed",
                                                           "undetected"]


def test_fate_does_not_sum_chance_coincidences_over_many_clusters():
    """A unit no cluster holds, whose spikes each of 40 busy clusters shares 2% of by chance
    (80% in all), is undetected, not mixed (the 384-channel sorts have ~160 clusters)."""
    from spikeinterface.comparison import compare_sorter_to_ground_truth

    k = np.arange(100) * 3000
    truth = bench_peers.sorting_of(k, np.zeros(100, int), 30000.0)
    own = [np.arange(200) * 3000 + 1000 + 25 * c for c in range(40)]  # >= 1000 samples from k
    shared = [k[2 * c:2 * c + 2] for c in range(40)]
    times = np.concatenate(own + shared)
    clusters = np.concatenate([np.full(200, c) for c in range(40)] + [np.full(2, c) for c in range(40)])
    c = compare_sorter_to_ground_truth(truth, bench_peers.sorting_of(times, clusters, 30000.0),
                                       exhaustive_gt=True, delta_time=0.4)
    assert c.match_event_count.to_numpy()[0].sum() == 80  # the old rule's 'mixed'
    assert bench_peers.fate(c, 0) == "undetected"
    # with 60% of its spikes in one cluster of its own besides, it is held there: partial
    times2 = np.concatenate([times, k[40:] + 1])
    clusters2 = np.concatenate([clusters, np.full(60, 40)])
    c2 = compare_sorter_to_ground_truth(truth, bench_peers.sorting_of(times2, clusters2, 30000.0),
                                        exhaustive_gt=True, delta_time=0.4)
    assert bench_peers.fate(c2, 0) == "partial"


def _refractory_train(rng, *, rate_hz, duration_s, refractory_s=0.004):
    """(n,) sorted spike times (s) of a Poisson train with a dead time."""
    isi = rng.exponential(1 / rate_hz, int(rate_hz * duration_s * 1.5)) + refractory_s
    t = np.cumsum(isi)
    return t[t < duration_s]


@pytest.mark.parametrize("duration_s, verdict", [(120.0, "R fails"), (1200.0, "merge")])
def test_a_split_refractory_unit_is_merged_only_when_the_recording_is_long(duration_s, verdict):
    # one 5-Hz neuron split in two halves at random: never two spikes within 4 ms, yet with 300
    # spikes a piece over 2 minutes too few coincidences are expected by chance for find_merges'
    # R test to call the gap significant; over 20 minutes it is
    import why_split

    rng = np.random.default_rng(3)
    t = _refractory_train(rng, rate_hz=5.0, duration_s=duration_s)
    half = rng.random(t.size) < 0.5
    times_s = {0: t[half], 1: t[~half]}
    sim, mu = np.array([[1.0, 0.8], [0.8, 1.0]]), np.array([20.0, 14.0])
    res = why_split.pair_tests({"cluster": 0}, {"cluster": 1}, times_s=times_s, sim=sim, mu=mu,
                               duration_s=duration_s)
    assert res["coincidences_within_refractory"] == 0 and res["Q"] < 0.2
    assert res["merge_verdict"] == verdict
    assert not res["triage_would_drop"]  # correlation 0.8 < 0.9: learning kept both templates
    if verdict == "R fails":
        assert 120 < res["needs_duration_s"] < 1200


def test_pieces_are_the_clusters_that_hold_a_unit():
    import why_split

    unit = np.arange(100) * 1000
    times = np.concatenate([unit[:60] + 3, unit[60:] - 2, unit + 500])  # 2 pieces and another unit
    clusters = np.repeat([4, 7, 9], [60, 40, 100])
    pieces = why_split.pieces_of(unit, times, clusters, fs=30000.0)
    assert [(p["cluster"], p["unit_spikes"]) for p in pieces] == [(4, 60), (7, 40)]


def test_peer_tables_show_pss_where_measured_and_timeouts():
    import plot_peers

    ok = {"status": "ok", "units_ge_0.8": 5, "false_positive": 1, "redundant": 0, "n_clusters": 7,
          "wall_s": 60.0, "x_realtime": 2.0, "peak_rss_mib": 900.0}
    row = {"case": "static", "channels": 64, "duration_s": 120.0, "units": 6, "sorters": {
        "pykilosort_ks2": {**ok, "peak_pss_mib": 450.0},
        "tridesclous2": ok,  # measured before PSS was sampled
        "kilosort4": {"status": "timeout", "limit_s": 1200.0, "peak_rss_mib": 1500.0}}}
    text = plot_peers.summary_table([row], fields=("x_realtime", "memory"))
    assert "| 2.00 / 450 | 2.00 / 900* | timeout |" in text
    assert "timed out at 1200 s" in plot_peers.results_table([row])


def test_a_sorter_killed_by_a_signal_says_so():
    res = run_limited([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                      timeout_s=30)
    assert res["returncode"] == -9
    assert "killed by SIGKILL" in bench_peers.failure_text(res["returncode"], res["stderr_tail"])
    assert bench_peers.failure_text(3, "") == "exit status 3, no error text"


def test_detector_benchmark_compares_both_modes_on_real_batches(tmp_path, monkeypatch):
    """bench_detector runs the full and the pruned detector on the proc file's batches and
    checks that their spikes are identical: a pruned run that lost a spike stops it."""
    import json

    import bench_detector

    out = tmp_path / "detector.json"
    args = ["--channels", "32", "--duration", "5", "--batches", "2", "--work", str(tmp_path)]
    bench_detector.main(args + ["--out", str(out)])
    row = json.loads(out.read_text())["rows"][0]
    assert row["batches"] == 2 and row["channels"] == 32 and row["spikes"] > 20
    assert row["identical_spikes"] and row["full_s_per_batch"] > 0 and row["speedup"] > 0
    detect = bench_detector.detect

    def lossy(*a, keep_scores, **kw):
        res = detect(*a, keep_scores=keep_scores, **kw)
        return res if keep_scores else res._replace(times=res.times[1:])

    monkeypatch.setattr(bench_detector, "detect", lossy)
    with pytest.raises(SystemExit, match="differs in times"):
        bench_detector.main(args)


def test_stored_peers_takes_the_other_sorters_of_the_same_recording(tmp_path):
    def result(name, sorters):
        return {"rows": [{"name": name, "sorters": {s: {"units_ge_0.8": u} for s, u in sorters}}]}

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(result("rec1", [("pykilosort_ks2", 1), ("tridesclous2", 5)])))
    second.write_text(json.dumps({"rows": result("rec2", [("tridesclous2", 9)])["rows"]
                                  + result("rec1", [("tridesclous2", 7), ("mountainsort5", 3)])["rows"]}))
    got = bench_peers.stored_peers([first, second], "rec1", ["pykilosort_ks2"])
    assert got == {"tridesclous2": {"units_ge_0.8": 5, "stored_in": "a.json"},
                   "mountainsort5": {"units_ge_0.8": 3, "stored_in": "b.json"}}
    assert bench_peers.stored_peers([first], "rec3", []) == {}


def test_latest_rows_replaces_a_rerun_recording_in_place(tmp_path):
    import plot_peers

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps({"rows": [{"name": "a", "v": 1}, {"name": "b", "v": 1},
                                        {"name": "c", "v": 1}]}))
    new.write_text(json.dumps({"rows": [{"name": "b", "v": 2}, {"name": "d", "v": 2}]}))
    assert plot_peers.latest_rows([old, new]) == [{"name": "a", "v": 1}, {"name": "b", "v": 2},
                                                  {"name": "c", "v": 1}, {"name": "d", "v": 2}]


def test_every_benchmark_sorter_name_has_a_runner():
    import peer_sorters

    names = bench_peers.CPU_SORTERS + bench_peers.GPU_SORTERS + bench_peers.VARIANTS
    assert set(names) == set(peer_sorters.SORTERS)
    func, kwargs = peer_sorters.SORTERS["pykilosort_ks2_th8"]
    assert func is peer_sorters._pykilosort and kwargs["extra"] == {"Th": [8.0, 4.0]}


def test_variants_stay_out_of_the_summary_rows():
    import plot_peers

    rows = [{"name": "a", "sorters": {"pykilosort_ks2": 1, "pykilosort_ks2_th8": 2, "tdc": 3}}]
    assert plot_peers.without(rows, plot_peers.VARIANTS) == [
        {"name": "a", "sorters": {"pykilosort_ks2": 1, "tdc": 3}}]
    assert rows[0]["sorters"]["pykilosort_ks2_th8"] == 2  # the input is left as it was


def test_results_taken_from_an_earlier_file_are_marked():
    import plot_peers

    res = {"status": "ok", "units_ge_0.8": 5, "false_positive": 1}
    row = {"case": "static", "channels": 64, "duration_s": 120, "units": 30,
           "sorters": {"pykilosort_ks2": res, "tridesclous2": {**res, "stored_in": "old.json"}}}
    table = plot_peers.summary_table([row])
    assert table.splitlines()[-1] == "| static 64 ch 2 min (30) | 5 / 1 | 5 / 1 (†) |"


def test_steps_memory_table_lists_each_runs_steps_in_pipeline_order():
    import plot_peers

    row = {"case": "static", "channels": 384, "duration_s": 600.0, "units": 180, "sorters": {
        "pykilosort_ks2": {"steps_peak_rss_mib": {"preprocess": 600.4, "learn": 1200.0},
                           "peak_rss_self_mib": 1210.0},
        "pykilosort_ks25": {"steps_peak_rss_mib": {"preprocess": 610.0, "datashift": 900.0,
                                                   "learn": 1100.0}},
        "tridesclous2": {"peak_rss_mib": 5000.0},  # a peer: no steps
        "old": {"steps_peak_rss_mib": {"learn": 1.0}, "stored_in": "x.json"}}}
    lines = plot_peers.steps_memory_table([row]).splitlines()
    assert lines[0] == "| recording | sorter | preprocess | datashift | learn | process (MiB) |"
    assert lines[2:] == ["| static 384 ch 10 min | pykilosort_ks2 | 600 | - | 1200 | 1210 |",
                         "| static 384 ch 10 min | pykilosort_ks25 | 610 | 900 | 1100 | - |"]
