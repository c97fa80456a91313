"""Kilosort 2.5's generic-template detector on the CPU: the scores pruned by their Cauchy-Schwarz
bound (``keep_scores=False``, what datashift runs) against every score computed (the peer, the
same kernel in the same run), on real batches of a whitened proc file.

    python benchmarks/bench_detector.py [--meta RECORDING.json] [--channels 384] [--duration 30]
        [--batches 8] [--work DIR] [--out FILE.json]

``--meta``: a recording written by ``recordings.py`` (bench_peers / bench_drift: the SpikeInterface
ones); otherwise pykilosort's own synthetic recording on a staggered probe. The proc file comes
from ``run(stop_after="preprocess")``; the detector's inputs from ``drift.detector_inputs``, as in
datashift. Each batch runs in both modes, alternating which goes first; the spikes (times, centres,
amplitudes, kk, features) must be identical, and the run fails otherwise.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import write_result  # noqa: E402

FIELDS = ("times", "centres", "amplitudes", "kk", "features", "n_found")


def recording(args) -> dict:
    """{bin, probe (a probeinterface .json or a Probe), fs, name} of the recording."""
    if args.meta:
        import json

        meta = json.loads(Path(args.meta).read_text())
        return {**meta, "probe": meta["probe_json"]}
    from pykilosort.synthetic import load_or_make_synthetic_recording

    path = args.work / f"synthetic{args.channels}_{args.duration:g}s.bin"
    rec = load_or_make_synthetic_recording(path, n_channels=args.channels,
                                           n_units=args.channels // 3,
                                           duration_s=args.duration, seed=args.channels)
    return {"bin": str(path), "probe": rec.probe, "fs": rec.fs,
            "name": path.stem}


def detect(data, *, setup, templates, ctx, keep_scores: bool):
    from pykilosort.detector import _SIG
    from pykilosort.kernels import detect_generic_spikes

    p = ctx.params
    return detect_generic_spikes(
        data, templates=templates, iC=setup.iC, dist=setup.dist, v2=setup.v2, iC2=setup.iC2,
        dist2=setup.dist2, nt0min=ctx.derived.nt0min, spk_th=p.genericSpkTh, sig=_SIG,
        max_spikes=p.datashift_max_spikes, keep_scores=keep_scores)


def measure(ctx, *, n_batches: int) -> dict:
    from pykilosort.drift import channel_groups, detector_inputs

    p = ctx.params
    groups = channel_groups(ctx.probe_good, matlab_compat=p.matlab_compat)
    read, setup, wtemp = detector_inputs(ctx, groups=groups)
    templates = np.asarray(wtemp, np.float32)
    n_batches = min(n_batches, int(ctx.intermediate.Nbatch) - 1)  # full batches only
    seconds = {"full": 0.0, "pruned": 0.0}
    spikes = 0
    for k in range(-1, n_batches):  # batch -1: batch 0 again, untimed (numba's compile)
        data = np.asarray(read(p.NT * max(k, 0), p.NT + p.ntbuff), np.float32) / np.float32(p.scaleproc)
        res = {}
        for keep in ((True, False) if k % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            res[keep] = detect(data, setup=setup, templates=templates, ctx=ctx, keep_scores=keep)
            if k >= 0:
                seconds["full" if keep else "pruned"] += time.perf_counter() - t0
        for f in FIELDS:
            if not np.array_equal(getattr(res[True], f), getattr(res[False], f)):
                raise SystemExit(f"batch {k}: pruned detector differs in {f}")
        spikes += int(res[True].n_found) if k >= 0 else 0
    return {"batches": n_batches, "NT": p.NT, "centres": int(setup.iC.shape[1]),
            "channels": int(setup.iC.max()) + 1, "spikes": spikes,
            "full_s_per_batch": seconds["full"] / n_batches,
            "pruned_s_per_batch": seconds["pruned"] / n_batches,
            "speedup": seconds["full"] / seconds["pruned"], "identical_spikes": True}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meta", help="recording JSON of recordings.py (default: synthetic)")
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pyks_bench_detector"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    from pykilosort import run

    rec = recording(args)
    ctx = run(rec["bin"], probe=rec["probe"], dir_path=args.work / rec["name"],
              device="cpu", fs=rec["fs"], drift_correction=True, stop_after="preprocess")
    row = {"recording": rec["name"], **measure(ctx, n_batches=args.batches)}
    print(row)
    write_result("bench_detector", [row], args.out)


if __name__ == "__main__":
    main()
