"""Throughput of sort_many (issue 13): N short recordings sorted one at a time (one worker with
every core) vs on several workers (the cores shared among them), on a distributed.LocalCluster.

    python benchmarks/bench_many.py [--recordings 8] [--duration 30] [--channels 32]
        [--workers 1 2] [--work DIR] [--out FILE.json]

Recordings: our synthetic generator (``make_synthetic_recording``, 16 units), distinct seeds.
Every mode sorts all of them from scratch (``rerun=True`` in fresh folders). Reported per mode:
wall time of the whole batch, recordings per hour, the sum of the jobs' own wall times, and the
largest peak memory of one job (sampled in its worker, ``sort_many``'s ``peak_rss_mib``). The
peer is the one-worker mode measured in the same run.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import write_result  # noqa: E402


def main():
    from pykilosort import sort_many
    from pykilosort.synthetic import load_or_make_synthetic_recording

    ap = argparse.ArgumentParser()
    ap.add_argument("--recordings", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pyks_many")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    recs = [load_or_make_synthetic_recording(args.work / "data" / f"r{i}.bin",
                                             n_channels=args.channels, n_units=16,
                                             duration_s=args.duration, seed=100 + i)
            for i in range(args.recordings)]
    rows = []
    for n_workers in args.workers:
        out = args.work / f"w{n_workers}"
        shutil.rmtree(out, ignore_errors=True)
        jobs = [{"dat_path": str(r.bin_path), "probe": r.probe, "output_dir": str(out / f"r{i}"),
                 "device": "cpu"} for i, r in enumerate(recs)]
        t0 = time.perf_counter()
        table = sort_many(jobs, n_workers=n_workers, n_threads=max(1, cores // n_workers))
        wall = time.perf_counter() - t0
        assert all(r["status"] == "ok" for r in table), table
        row = {"workers": n_workers, "threads_per_job": max(1, cores // n_workers),
               "recordings": len(jobs), "recording_s": args.duration, "channels": args.channels,
               "wall_s": wall, "recordings_per_hour": 3600 * len(jobs) / wall,
               "sum_job_wall_s": sum(r["wall_s"] for r in table),
               "max_job_peak_rss_mib": max(r["peak_rss_mib"] for r in table),
               "x_realtime_total": len(jobs) * args.duration / wall}
        print(json.dumps(row), flush=True)
        rows.append(row)
    base = rows[0]["wall_s"]
    for row in rows:
        row["speedup_vs_" + f"{args.workers[0]}_worker"] = base / row["wall_s"]
    result = write_result("many", rows, args.out)
    for row in result["rows"]:
        print(f"{row['workers']} worker(s) x {row['threads_per_job']} threads: "
              f"{row['wall_s']:.0f} s, {row['recordings_per_hour']:.0f} recordings/h, "
              f"peak {row['max_job_peak_rss_mib']:.0f} MiB per job")


if __name__ == "__main__":
    main()
