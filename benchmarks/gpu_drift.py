"""Drift-corrected sorting of a 384-channel drifting recording on a GPU (the device check's
second part, benchmarks/README.md): our synthetic generator's rigid or non-rigid drift, sorted
with Kilosort 2.5 (nblocks=5), Kilosort 2.5 without registration (nblocks=0) and Kilosort2
(batch reordering), all device="cuda". Per mode: units found with accuracy >= 0.8, wall time;
for the drift estimate: correlation and rms error against the imposed drift.

    python3 benchmarks/gpu_drift.py --out results.json [--duration 90] [--drift rigid]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

MODES = {"ks25_nblocks5": dict(drift_correction=True, nblocks=5, NT=65536 - 64),
         "ks25_nblocks0": dict(drift_correction=True, nblocks=0, NT=65536 - 64),
         "ks2_reorder": dict(drift_correction=False)}


def drift_accuracy(rec, ctx) -> dict:
    """-dshift (minus its mean) against the imposed drift at each block and batch centre."""
    from pykilosort.drift import batch_centre_times

    it = ctx.intermediate
    dshift, yblk = np.asarray(it.dshift), np.asarray(it.yblk)
    tb = batch_centre_times(ctx, dshift.shape[0])
    cols = [np.interp(tb, rec.drift_times, rec.drift[:, j]) for j in range(rec.drift.shape[1])]
    imposed = np.stack([np.interp(yblk, rec.drift_depths, row) for row in np.stack(cols, 1)])
    est = -dshift - (-dshift).mean(axis=0)
    imposed = imposed - imposed.mean(axis=0)
    return {"r": float(np.corrcoef(est.ravel(), imposed.ravel())[0, 1]),
            "rms_um": float(np.sqrt(np.mean((est - imposed) ** 2))),
            "imposed_range_um": float(np.ptp(imposed))}


def units_found(rec, ctx) -> int:
    from pykilosort.evaluate import compare_to_ground_truth

    c = compare_to_ground_truth(true_times=rec.spike_times, true_units=rec.spike_clusters,
                                times=ctx.spike_times, clusters=ctx.spike_clusters, fs=rec.fs)
    acc = [c.agreement[u, b] if b >= 0 else 0.0 for u, b in enumerate(c.best)]
    return int(np.sum(np.asarray(acc) >= 0.8))


def main() -> None:
    from pykilosort import make_synthetic_recording, run
    from pykilosort.backend import get_backend

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--drift", default="rigid", choices=["rigid", "nonrigid"])
    ap.add_argument("--work", default="/tmp/pykilosort_gpu_drift")
    args = ap.parse_args()
    work = Path(args.work)
    t0 = time.perf_counter()
    rec = make_synthetic_recording(work / "rec.bin", n_channels=384, n_units=96,
                                   duration_s=args.duration, seed=7, drift=args.drift,
                                   drift_um=30.0, drift_period_s=args.duration / 2)
    result = {"device": get_backend("cuda").describe(), "drift": args.drift, "drift_um": 30.0,
              "channels": 384, "units": 96, "duration_s": args.duration,
              "generate_s": round(time.perf_counter() - t0, 1), "modes": {}}
    for name, kw in MODES.items():
        t0 = time.perf_counter()
        ctx = run(rec.bin_path, probe=rec.probe, dir_path=work / name, device="cuda",
                  clear_context=True, **kw)
        row = {"wall_s": round(time.perf_counter() - t0, 1), "units_acc_ge_0.8": units_found(rec, ctx)}
        if "dshift" in ctx.intermediate:
            row["drift"] = drift_accuracy(rec, ctx)
            row["datashift_wall_s"] = ctx.read_manifest()["steps"]["datashift"]["wall_s"]
        result["modes"][name] = row
        print(name, json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
