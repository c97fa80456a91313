"""The peer benchmark's harness (benchmarks/): the figures it reports are only as honest as its
process measurement (time limit, memory of a whole process tree) and its bookkeeping."""
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


@pytest.mark.parametrize("spec", ["static:64", "drifty:64:120", "static:60:120", "static:x:120"])
def test_bad_recording_specs_are_refused(spec):
    with pytest.raises(SystemExit, match="recording"):
        bench_peers.parse_recording(spec)


def test_recording_specs_give_units_and_distinct_seeds():
    a = bench_peers.parse_recording("static:64:120")
    b = bench_peers.parse_recording("rigid:64:120")
    assert (a["n_units"], a["channels"], a["duration"]) == (30, 64, 120.0)
    assert a["seed"] != b["seed"]


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
        "tridesclous2": {"status": "timeout"}}}
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
