"""One sorter on one benchmark recording, in its own process (run by bench_peers.py).

    python benchmarks/peer_sorters.py SORTER META.json OUT_DIR

Writes ``OUT_DIR/spikes.npz`` (times, clusters; for pykilosort also each step's spikes, so the
benchmark can say which step lost a unit) and prints one JSON line: the sorter's own wall time
(imports and reading the result excluded), its version and its parameters.

Peers run at their defaults. Their parallelism is set to the machine's cores (SpikeInterface's
global ``n_jobs``, mountainsort5's ``n_jobs``) because pykilosort uses every core too.
"""
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# pykilosort steps whose spikes are kept, in pipeline order (steps a run lacks or that save no
# st3 are skipped)
STEPS = ("learn", "duplicates", "merges", "split_svd", "split_amplitude", "cutoff", "good_units")


def _pykilosort(meta: dict, out: Path, *, device: str, drift_correction: bool,
                extra: dict | None = None) -> dict:
    import pykilosort
    from pykilosort import run

    params = {"drift_correction": drift_correction, **(extra or {})}
    gpu = contextlib.nullcontext()
    if device == "cuda":  # device memory in use, sampled (CuPy's pool keeps freed blocks)
        from gpu_check import GpuMemoryPeak
        gpu = GpuMemoryPeak()
    t0 = time.perf_counter()
    with gpu:
        ctx = run(meta["bin"], probe=meta["probe_json"], dir_path=out / "run", device=device,
                  fs=meta["fs"], **params)
    wall = time.perf_counter() - t0
    manifest = ctx.read_manifest()
    steps = {}
    for step in STEPS:
        if "st3" in manifest["steps"].get(step, {}).get("files", {}):
            st3 = np.asarray(ctx.checkpoint(step, "st3"))
            steps[step + "_times"], steps[step + "_clusters"] = st3["time"], st3["template"]
    np.savez(out / "spikes.npz", times=np.asarray(ctx.spike_times),
             clusters=np.asarray(ctx.spike_clusters), good=np.asarray(ctx.intermediate.good),
             **steps)
    return {"wall_s": wall, "version": pykilosort.__version__, "params": params,
            "steps_s": {k: v["wall_s"] for k, v in manifest["steps"].items()},
            # each step's own peak (VmHWM reset before it, Linux), to say which step needs memory
            "steps_peak_rss_mib": {k: v.get("peak_rss_mib") for k, v in manifest["steps"].items()},
            "peak_gpu_mib": (gpu.peak - gpu.baseline) / 2**20 if device == "cuda" else None}


def _kilosort4(meta: dict, out: Path, *, device: str) -> dict:
    import kilosort
    import torch
    from kilosort import run_kilosort

    loc = np.array(meta["locations"])
    n = loc.shape[0]
    probe = {"chanMap": np.arange(n), "xc": loc[:, 0], "yc": loc[:, 1], "kcoords": np.zeros(n),
             "n_chan": n}
    settings = {"n_chan_bin": n, "fs": meta["fs"]}
    t0 = time.perf_counter()
    _, st, clu, *_, kept = run_kilosort(settings=settings, probe=probe, filename=meta["bin"],
                                        results_dir=out / "ks4", device=torch.device(device),
                                        verbose_console=False)
    wall = time.perf_counter() - t0
    np.savez(out / "spikes.npz", times=st[:, 0], clusters=clu)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"wall_s": wall, "version": kilosort.__version__, "params": settings,
            "torch": torch.__version__, "peak_gpu_mib": peak_gpu}


def _spikeinterface(meta: dict, out: Path, *, name: str, params: dict) -> dict:
    import probeinterface
    import spikeinterface
    import spikeinterface.core as si
    import spikeinterface.sorters as ss

    n_jobs = os.cpu_count()
    si.set_global_job_kwargs(n_jobs=n_jobs, progress_bar=False)
    if name == "mountainsort5":
        params = {"n_jobs": n_jobs, "progress_bar": False, **params}
    recording = si.read_binary(meta["bin"], sampling_frequency=meta["fs"], dtype="int16",
                               num_channels=len(meta["locations"]), gain_to_uV=1.0,
                               offset_to_uV=0.0)  # the benchmark wrote microvolts as int16
    recording.set_probe(probeinterface.read_probeinterface(meta["probe_json"]).probes[0])
    t0 = time.perf_counter()
    sorting = ss.run_sorter(name, recording, folder=out / name, remove_existing_folder=True,
                            verbose=False, **params)
    wall = time.perf_counter() - t0
    spikes = sorting.to_spike_vector()
    np.savez(out / "spikes.npz", times=spikes["sample_index"], clusters=spikes["unit_index"])
    return {"wall_s": wall, "version": ss.sorter_dict[name].get_sorter_version(),
            "spikeinterface": spikeinterface.__version__, "params": params, "n_jobs": n_jobs}


# name -> (function, keyword arguments); the names are the benchmark's sorter names
SORTERS = {
    "pykilosort_ks2": (_pykilosort, {"device": "cpu", "drift_correction": False}),
    "pykilosort_ks25": (_pykilosort, {"device": "cpu", "drift_correction": True}),
    "pykilosort_ks2_cuda": (_pykilosort, {"device": "cuda", "drift_correction": False}),
    "pykilosort_ks25_cuda": (_pykilosort, {"device": "cuda", "drift_correction": True}),
    # not a default: learning's threshold Th(1) lowered from 10 to 8 (where_we_lose, item 6)
    "pykilosort_ks2_th8": (_pykilosort, {"device": "cpu", "drift_correction": False,
                                         "extra": {"Th": [8.0, 4.0]}}),
    "kilosort4": (_kilosort4, {"device": "cpu"}),
    "kilosort4_cuda": (_kilosort4, {"device": "cuda"}),
    "spykingcircus2": (_spikeinterface, {"name": "spykingcircus2", "params": {}}),
    "tridesclous2": (_spikeinterface, {"name": "tridesclous2", "params": {}}),
    "tridesclous2_motion": (_spikeinterface, {"name": "tridesclous2",
                                              "params": {"apply_motion_correction": True}}),
    "mountainsort5": (_spikeinterface, {"name": "mountainsort5", "params": {}}),
}


def main() -> None:
    name, meta_path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if name not in SORTERS:
        raise SystemExit(f"unknown sorter {name!r}; known: {', '.join(SORTERS)}")
    out.mkdir(parents=True, exist_ok=True)
    func, kwargs = SORTERS[name]
    result = func(json.loads(meta_path.read_text()), out, **kwargs)
    # the kernel's exact peak of this process alone (VmHWM: children are left out, and so is
    # this benchmark's own memory, which ru_maxrss would carry over the fork and exec)
    from pykilosort.logs import peak_rss_mib

    result["peak_rss_self_mib"] = peak_rss_mib()
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
