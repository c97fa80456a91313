"""The GPU check for the day a GPU is lent (run by benchmarks/gpu_check.sh, which first runs the
gpu tests): a synthetic 384-channel recording sorted with device="cuda" and device="cpu" on the
same machine. Writes a JSON with the device, per-step wall time as x real time for both runs,
peak GPU memory of the CUDA run, and how the two sortings agree (spikes in common, templates).

    python3 benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json [--duration 60]
"""
from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from pathlib import Path

import numpy as np


class GpuMemoryPeak:
    """Peak device memory in use (total - free, all processes) sampled every 20 ms."""

    def __init__(self):
        import cupy

        self._info = cupy.cuda.runtime.memGetInfo
        free, total = self._info()
        self.baseline, self.peak, self._stop = total - free, total - free, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.02):
            free, total = self._info()
            self.peak = max(self.peak, total - free)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def step_times(ctx, duration_s: float) -> dict:
    """Each step's wall time (s) and x real time, from the run's manifest."""
    manifest = json.loads((ctx.path / "manifest.json").read_text())["steps"]
    return {name: {"wall_s": r["wall_s"], "x_real_time": round(duration_s / max(r["wall_s"], 1e-9), 2)}
            for name, r in manifest.items()}


def agreement(cpu, gpu, *, tolerance: int = 5) -> dict:
    """Spikes of the CUDA run within ``tolerance`` samples of a CPU spike, and template counts."""
    a = np.sort(np.asarray(cpu.spike_times))
    b = np.sort(np.asarray(gpu.spike_times))
    idx = np.clip(np.searchsorted(a, b), 1, max(a.size - 1, 1))
    near = np.minimum(np.abs(b - a[idx - 1]), np.abs(b - a[np.minimum(idx, a.size - 1)]))
    return {"spikes_cpu": int(a.size), "spikes_cuda": int(b.size),
            "cuda_spikes_within_5_samples_of_a_cpu_spike": float((near <= tolerance).mean()),
            "templates_cpu": int(np.asarray(cpu.intermediate.W).shape[1]),
            "templates_cuda": int(np.asarray(gpu.intermediate.W).shape[1]),
            "clusters_cpu": int(cpu.cluster_labels.size), "clusters_cuda": int(gpu.cluster_labels.size)}


def main() -> None:
    from pykilosort import make_synthetic_recording, run
    from pykilosort.backend import get_backend

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of recording")
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--units", type=int, default=96)
    ap.add_argument("--work", default="/tmp/pykilosort_gpu_check")
    ap.add_argument("--drift-duration", type=float, default=30.0,
                    help="seconds of the drifting recording for the datashift check (0: none)")
    args = ap.parse_args()
    work = Path(args.work)
    rec = make_synthetic_recording(work / "rec.bin", n_channels=args.channels, n_units=args.units,
                                   duration_s=args.duration, seed=0)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.node(),
              "device": get_backend("cuda").describe(), "recording": {
                  "channels": args.channels, "units": args.units, "duration_s": args.duration,
                  "seed": 0}}
    runs = {}
    for device in ("cuda", "cpu"):
        t0 = time.perf_counter()
        if device == "cuda":
            with GpuMemoryPeak() as mem:
                runs[device] = run(rec.bin_path, probe=rec.probe, dir_path=work / device,
                                   device=device, clear_context=True)
            result["peak_gpu_memory_gib"] = round((mem.peak - mem.baseline) / 2**30, 3)
        else:
            runs[device] = run(rec.bin_path, probe=rec.probe, dir_path=work / device,
                               device=device, clear_context=True)
        wall = time.perf_counter() - t0
        result[device] = {"wall_s": round(wall, 1), "x_real_time": round(args.duration / wall, 2),
                          "steps": step_times(runs[device], args.duration)}
        print(device, json.dumps(result[device]), flush=True)
    result["agreement"] = agreement(runs["cpu"], runs["cuda"])
    _write(args.out, result)  # the KS2 part survives a drift part cut short
    if args.drift_duration > 0:
        result["drift"] = drift_check(work, channels=args.channels, units=args.units,
                                      duration=args.drift_duration)
        _write(args.out, result)
    print(json.dumps(result, indent=1))


def _write(path, result) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1))


def drift_check(work: Path, *, channels: int, units: int, duration: float) -> dict:
    """Kilosort 2.5's datashift step on a rigidly drifting recording, cuda vs cpu: step times,
    the two drift estimates' largest difference, detections and shifted proc agreement."""
    from pykilosort import make_synthetic_recording, run

    rec = make_synthetic_recording(work / "drift.bin", n_channels=channels, n_units=units,
                                   duration_s=duration, seed=1, drift="rigid", drift_um=20.0)
    out, ctxs = {"duration_s": duration}, {}
    for device in ("cuda", "cpu"):
        t0 = time.perf_counter()
        ctxs[device] = run(rec.bin_path, probe=rec.probe, dir_path=work / f"drift_{device}",
                           device=device, clear_context=True, drift_correction=True,
                           NT=65536 - 64, stop_after="datashift")
        out[device] = {"wall_s": round(time.perf_counter() - t0, 1),
                       "steps": step_times(ctxs[device], duration)}
        print("drift", device, json.dumps(out[device]), flush=True)
    a, b = (np.asarray(ctxs[d].intermediate.dshift) for d in ("cpu", "cuda"))
    pa, pb = (np.fromfile(ctxs[d].intermediate.proc, np.int16) for d in ("cpu", "cuda"))
    out.update(max_dshift_difference_um=float(np.abs(a - b).max()),
               detections_cpu=int(np.asarray(ctxs["cpu"].intermediate.st0).shape[0]),
               detections_cuda=int(np.asarray(ctxs["cuda"].intermediate.st0).shape[0]),
               shifted_proc_max_abs_difference=int(np.abs(pa.astype(np.int32) - pb).max()),
               shifted_proc_fraction_differing=float(np.mean(pa != pb)))
    return out


if __name__ == "__main__":
    main()
