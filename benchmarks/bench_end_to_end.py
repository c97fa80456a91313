"""The complete run (raw binary -> phy folder) on SpikeInterface ground truth: accuracy, speed per
step as x real time, peak memory; Kilosort4 on the CPU as the peer in the same run.

    python benchmarks/bench_end_to_end.py --work /tmp/pyks_e2e [--channels 32 64]
        [--durations 120 300] [--kinds static drifting] [--peer kilosort4] [--out FILE.json]

Recordings: ``spikeinterface.generation.generate_drifting_recording`` (its static and its
drifting recording share units and spike trains; zigzag drift of +-20 um, period 60 s, from 10 s),
written as int16 flat binaries. Units: half the channel count. Scoring:
``compare_sorter_to_ground_truth`` (exhaustive ground truth): units found at accuracy >= 0.8,
false-positive and redundant units, over all clusters and over the 'good' ones. Learning is scored
too (spikes of the ``learn`` step by template) to count units that post-processing lost, and
the step that lost each.
Each sorter runs in a fresh process (honest peak RSS); wall times exclude writing the recording.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import run_json_child, write_result  # noqa: E402

OURS = r"""
import json, resource, sys, time
import numpy as np
from pykilosort import run
from pykilosort.probes import Probe
meta = json.loads(open(sys.argv[1]).read())
loc = np.array(meta["locations"])
probe = Probe(NchanTOT=loc.shape[0], chanMap=np.arange(loc.shape[0]), xc=loc[:, 0], yc=loc[:, 1])
t0 = time.perf_counter()
ctx = run(meta["bin"], probe=probe, dir_path=sys.argv[2], device="cpu", fs=meta["fs"])
wall = time.perf_counter() - t0
manifest = json.loads((ctx.path / "manifest.json").read_text())
steps = {}
for step in ("learn", "duplicates", "merges", "split_svd", "split_amplitude", "cutoff"):
    if step in manifest["steps"]:
        st3 = np.asarray(ctx.checkpoint(step, "st3"))
        steps[step + "_times"], steps[step + "_clusters"] = st3["time"], st3["template"]
np.savez(sys.argv[2] + "/spikes.npz", times=ctx.spike_times, clusters=ctx.spike_clusters,
         good=ctx.intermediate.good, **steps)
print(json.dumps({"wall_s": wall, "steps_s": {k: v["wall_s"] for k, v in manifest["steps"].items()},
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

KILOSORT4 = r"""
import json, resource, sys, time
import numpy as np
from kilosort import run_kilosort
meta = json.loads(open(sys.argv[1]).read())
loc = np.array(meta["locations"])
n = loc.shape[0]
probe = {"chanMap": np.arange(n), "xc": loc[:, 0], "yc": loc[:, 1], "kcoords": np.zeros(n), "n_chan": n}
t0 = time.perf_counter()
ops, st, clu, tF, Wall, similar, is_ref, est_contam, kept = run_kilosort(
    settings={"n_chan_bin": n, "fs": meta["fs"]}, probe=probe, filename=meta["bin"],
    results_dir=sys.argv[2], device=__import__("torch").device("cpu"), verbose_console=False)
wall = time.perf_counter() - t0
np.savez(sys.argv[2] + "/spikes.npz", times=st[:, 0], clusters=clu, good=is_ref)
print(json.dumps({"wall_s": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_recording(work: Path, *, channels: int, duration: float, kind: str, seed: int) -> Path:
    """Write the recording and its ground truth once; returns the path of its meta JSON."""
    import numpy as np
    import spikeinterface.full as si
    from probeinterface import generate_multi_columns_probe

    name = f"{kind}{channels}_{int(duration)}s"
    meta_path = work / f"{name}.json"
    if meta_path.exists():
        return meta_path
    probe = generate_multi_columns_probe(num_columns=2, num_contact_per_column=channels // 2,
                                         xpitch=32, ypitch=20, contact_shapes="square",
                                         contact_shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(channels))
    static, drifting, truth, extra = si.generate_drifting_recording(
        num_units=channels // 2, duration=duration, probe=probe, seed=seed, extra_outputs=True,
        generate_displacement_vector_kwargs=dict(
            displacement_sampling_frequency=5.0, drift_start_um=[0, 20], drift_stop_um=[0, -20],
            drift_step_um=1, motion_list=[dict(drift_mode="zigzag", non_rigid_gradient=None,
                                               t_start_drift=10.0, t_end_drift=None,
                                               period_s=60)]))
    recording = static if kind == "static" else drifting
    folder = work / name
    saved = recording.save(folder=folder, dtype="int16", n_jobs=1, progress_bar=False,
                           overwrite=True)
    displacement = np.asarray(extra["unit_displacements"]) if kind == "drifting" else np.zeros(1)
    truth.save(folder=work / f"{name}_truth", overwrite=True)
    meta = {"bin": str(saved.get_binary_description()["file_paths"][0]), "fs": recording.sampling_frequency,
            "locations": recording.get_channel_locations().tolist(), "duration_s": duration,
            "truth": str(work / f"{name}_truth"), "kind": kind, "channels": channels,
            "max_unit_displacement_um": float(np.abs(displacement).max())}
    meta_path.write_text(json.dumps(meta))
    return meta_path


def score(truth_folder, times, clusters, good, fs) -> dict:
    import numpy as np
    import spikeinterface.full as si

    truth = si.load(truth_folder)
    out = {}
    for label, keep in (("all", np.ones(times.size, bool)), ("good", np.isin(clusters, np.flatnonzero(good)))):
        sorting = si.NumpySorting.from_samples_and_labels([times[keep]], [clusters[keep]], fs)
        c = si.compare_sorter_to_ground_truth(truth, sorting, exhaustive_gt=True)
        acc = c.get_performance()["accuracy"].values.astype(float)
        out[label] = {"units_ge_0.8": int((acc >= 0.8).sum()), "false_positive": c.count_false_positive_units(),
                      "redundant": c.count_redundant_units(), "n_clusters": int(sorting.get_num_units()),
                      "accuracy": np.round(acc, 3).tolist()}
    return out


def lost_units(truth_folder, z, fs) -> dict:
    """Ground-truth units at accuracy >= 0.8 after learn but not at the end: unit -> the first
    post-processing step after which it fell below 0.8."""
    import numpy as np
    import spikeinterface.full as si

    truth = si.load(truth_folder)
    steps = [k[:-6] for k in z.files if k.endswith("_times")]
    acc = {}
    for step in steps:
        sorting = si.NumpySorting.from_samples_and_labels([z[step + "_times"]],
                                                          [z[step + "_clusters"]], fs)
        c = si.compare_sorter_to_ground_truth(truth, sorting, exhaustive_gt=True)
        acc[step] = c.get_performance()["accuracy"].values.astype(float)
    lost = np.flatnonzero((acc["learn"] >= 0.8) & (acc[steps[-1]] < 0.8))
    return {int(u): next(s for s in steps if acc[s][u] < 0.8) for u in lost}


def main():
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pyks_e2e")
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--durations", type=float, nargs="+", default=[120.0, 300.0])
    ap.add_argument("--kinds", nargs="+", default=["static", "drifting"])
    ap.add_argument("--peer", choices=["kilosort4", "none"], default="none")
    ap.add_argument("--peer-python", help="python of a virtualenv with kilosort (torch CPU)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for channels in args.channels:
        for duration in args.durations:
            for kind in args.kinds:
                meta_path = make_recording(args.work, channels=channels, duration=duration,
                                           kind=kind, seed=channels)
                meta = json.loads(meta_path.read_text())
                row = {k: meta[k] for k in ("kind", "channels", "duration_s", "max_unit_displacement_um")}
                with tempfile.TemporaryDirectory(dir=args.work) as tmp:
                    res = run_json_child(OURS, meta_path, tmp)
                    z = np.load(Path(tmp) / "spikes.npz")
                    row["pykilosort"] = {
                        **res, "x_realtime": duration / res["wall_s"],
                        "steps_x_realtime": {k: round(duration / max(v, 1e-9), 1)
                                             for k, v in res["steps_s"].items()},
                        **score(meta["truth"], z["times"], z["clusters"], z["good"], meta["fs"]),
                        "learn": score(meta["truth"], z["learn_times"], z["learn_clusters"],
                                       np.ones(z["learn_clusters"].max() + 1, bool), meta["fs"])["all"],
                        "lost_by_postprocessing": lost_units(meta["truth"], z, meta["fs"])}
                if args.peer == "kilosort4":
                    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
                        res = run_json_child(KILOSORT4, meta_path, tmp, python=args.peer_python)
                        z = np.load(Path(tmp) / "spikes.npz")
                        row["kilosort4"] = {**res, "x_realtime": duration / res["wall_s"],
                                            **score(meta["truth"], z["times"], z["clusters"],
                                                    z["good"], meta["fs"])}
                    row["wall_ratio_pykilosort_over_kilosort4"] = (
                        row["pykilosort"]["wall_s"] / row["kilosort4"]["wall_s"])
                print(json.dumps(row), flush=True)
                rows.append(row)
    write_result("end_to_end", rows, args.out)


if __name__ == "__main__":
    main()
