"""Template learning + spike extraction (`learn` step): accuracy against ground truth, speed as
x real time, peak memory, and a profile of the largest costs.

    python benchmarks/bench_learn.py --work /tmp/pyks_learn [--channels 32 64 384] [--out FILE.json]

Accuracy (issue 4): our generator's 32-channel, 60 s, 20-unit static recording; share of
ground-truth spikes of units with SNR >= 5 found by any template within 0.5 ms, and share of
detected spikes matching no ground-truth spike. Speed: wall time of the `learn` step alone
(preprocessing and reordering are cached first) in a fresh process, x real time.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import run_json_child, write_result  # noqa: E402

CHILD = r"""
import cProfile, json, pstats, io, resource, sys, time
import numpy as np
from pykilosort import run
from pykilosort.synthetic import SyntheticRecording
rec = SyntheticRecording.load(sys.argv[1])
compat = sys.argv[2] == "compat"
kw = dict(probe=rec.probe, dir_path=sys.argv[3], device="cpu", matlab_compat=compat)
run(rec.bin_path, stop_after="reorder", **kw)           # cached inputs of the learn step
prof = cProfile.Profile()
t0 = time.perf_counter()
prof.enable()
ctx = run(rec.bin_path, stop_after="learn", **kw)
prof.disable()
wall = time.perf_counter() - t0
st = np.sort(ctx.intermediate.st3["time"])
def signed_nearest(a, b):
    # a[j] - b for the a[j] nearest each b
    i = np.clip(np.searchsorted(a, b), 1, a.size - 1)
    lo, hi = a[i - 1] - b, a[i] - b
    return np.where(np.abs(lo) <= np.abs(hi), lo, hi)
def nearest(a, b):
    return np.abs(signed_nearest(a, b))
offset = signed_nearest(st, rec.spike_times)
found = np.abs(offset) <= 15
clear = rec.snr[rec.spike_clusters] >= 5
unmatched = nearest(np.sort(rec.spike_times), st) > 15
s = io.StringIO(); pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(5)
top = [l.strip() for l in s.getvalue().splitlines() if l.strip() and l.strip()[0].isdigit()][:5]
print(json.dumps({"learn_wall_s": wall, "n_spikes": int(st.size),
                  "n_templates": int(ctx.intermediate.W.shape[1]),
                  "found_snr5": float(found[clear].mean()), "unmatched": float(unmatched.mean()),
                  "matlab_compat": compat,
                  "median_offset_samples": float(np.median(offset[found & clear])),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "profile_top5_tottime": top}))
"""


def main():
    from pykilosort import make_synthetic_recording

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pyks_learn")
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64, 384])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compat", action="store_true", help="also run with matlab_compat=True")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.channels:
        path = args.work / f"static{n}_{int(args.duration)}s.bin"
        if not path.exists():
            make_synthetic_recording(path, n_channels=n, n_units=20 if n == 32 else n // 2,
                                     duration_s=args.duration, seed=100 + n)
        for mode in ("default", "compat") if args.compat else ("default",):
            row = {"channels": n, "duration_s": args.duration, **run_json_child(CHILD, path, mode)}
            row["x_realtime"] = args.duration / row["learn_wall_s"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_result("learn", rows, args.out)


if __name__ == "__main__":
    main()
