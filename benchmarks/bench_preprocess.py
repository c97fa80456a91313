"""Preprocessing throughput (x real time) and peak memory, with the original under Octave as peer.

    python benchmarks/bench_preprocess.py --work /tmp/bench [--channels 32 64 384]
        [--durations 30 90] [--ks-path KILOSORT_V2_0_CHECKOUT] [--out results.json]

For each channel count a synthetic recording of each duration is generated, then sorted up to
`preprocess` (good channels, whitening, proc file) in a fresh process (numba's compiled cache
warmed beforehand, as after the first use on a machine). Peak RSS is that process's ru_maxrss.
With --ks-path, GNU Octave runs Kilosort2 v2.0's preprocessDataSub on the same file and is timed
in the same way (its good-channel, whitening and proc-writing phases, like ours).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import run_json_child, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pykilosort import run, make_synthetic_recording
from pykilosort.synthetic import SyntheticRecording
rec = SyntheticRecording.load(sys.argv[1])
t0 = time.perf_counter()
ctx = run(rec.bin_path, probe=rec.probe, dir_path=sys.argv[3], device=sys.argv[2], clear_context=True,
          stop_after="preprocess")
wall = time.perf_counter() - t0
manifest = json.loads((ctx.path / "manifest.json").read_text())
print(json.dumps({"wall_s": wall, "steps": {k: v["wall_s"] for k, v in manifest["steps"].items()},
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

OCTAVE = r"""
addpath('{shims}'); addpath('{ks}/preProcess', '{ks}/mainLoop', '{ks}/utils'); pkg load signal;
ops.fbinary = '{bin}'; ops.fproc = '{proc}'; ops.chanMap = '{chanmap}'; ops.NchanTOT = {nchan};
ops.fs = 30000; ops.fshigh = 150; ops.minfr_goodchannels = 0.1; ops.spkTh = -6; ops.ntbuff = 64;
ops.NT = 64*1024 + 64; ops.whiteningRange = 32; ops.nSkipCov = 25; ops.scaleproc = 200;
ops.trange = [0 Inf]; ops.nt0 = 61; t0 = tic; rez = preprocessDataSub(ops);
printf('OCTAVE_WALL %f\n', toc(t0));
"""


def make_recording(work: Path, n_channels: int, duration: float) -> Path:
    from pykilosort import make_synthetic_recording

    path = work / f"rec{n_channels}_{int(duration)}s.bin"
    if not path.exists():
        make_synthetic_recording(path, n_channels=n_channels, n_units=max(8, n_channels // 3),
                                 duration_s=duration, seed=n_channels)
    return path


def run_ours(path: Path, device: str) -> dict:
    return run_json_child(CHILD, path, device)


def run_octave(path: Path, ks: Path, n_channels: int) -> float:
    import numpy as np
    import scipy.io

    from pykilosort.synthetic import SyntheticRecording

    rec = SyntheticRecording.load(path)
    with tempfile.TemporaryDirectory() as tmp:
        chanmap = Path(tmp) / "chanMap.mat"
        scipy.io.savemat(chanmap, {"chanMap": (rec.probe.chanMap + 1.0)[:, None],
                                   "xcoords": rec.probe.xc[:, None], "ycoords": rec.probe.yc[:, None],
                                   "kcoords": np.ones((rec.probe.Nchan, 1))})
        code = OCTAVE.format(shims=ROOT / "matlab_reference" / "shims", ks=ks, bin=path,
                             proc=Path(tmp) / "proc.dat", chanmap=chanmap, nchan=n_channels)
        out = subprocess.run(["octave", "--no-gui", "--quiet", "--eval", code], capture_output=True,
                             text=True)
    for line in out.stdout.splitlines():
        if line.startswith("OCTAVE_WALL"):
            return float(line.split()[1])
    raise RuntimeError(out.stdout[-1000:] + out.stderr[-1000:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pyks_bench")
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64, 384])
    ap.add_argument("--durations", type=float, nargs="+", default=[30.0, 90.0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ks-path", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run_ours(make_recording(args.work, 32, 2.0), args.device)  # warm numba's on-disk cache
    rows = []
    for n in args.channels:
        for duration in args.durations:
            path = make_recording(args.work, n, duration)
            row = {"channels": n, "duration_s": duration, "device": args.device, **run_ours(path, args.device)}
            row["x_realtime"] = duration / row["wall_s"]
            if args.ks_path and duration == args.durations[0]:
                row["octave_original_wall_s"] = run_octave(path, args.ks_path, n)
                row["octave_x_realtime"] = duration / row["octave_original_wall_s"]
                row["speedup_vs_octave"] = row["octave_original_wall_s"] / row["wall_s"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_result("preprocess", rows, args.out)


if __name__ == "__main__":
    main()
