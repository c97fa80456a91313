"""Kilosort 2.5's drift correction (datashift, issue 11) on SpikeInterface's drifting ground truth:
how well the drift estimate follows the imposed motion, units recovered per mode, and the cost.

    python benchmarks/bench_drift.py [--quick] [--channels 64 384] [--duration 120]
        [--cases rigid bump] [--estimate-only-channels 384] [--work DIR] [--out FILE.json]

Recordings: ``spikeinterface.generation.generate_drifting_recording`` on a Neuropixels-like probe
(4 staggered columns, 20 um row pitch), seeded, written as int16 flat binaries; the probe goes to
pykilosort as a probeinterface .json. Cases:
- ``rigid``: zigzag, 40 um peak to peak (+-20 um), period 60 s, from 10 s; every unit moves alike.
- ``bump``: steps between +15 and -15 um (30 um peak to peak) at random intervals of 15-30 s from
  10 s, non-rigid: a unit's displacement is scaled linearly with its depth from 0.4 (one end of
  the units' depth range) to 1 (the other end).
Modes, each a complete run from scratch in a fresh process: ``ks25_nblocks5`` (datashift,
non-rigid), ``ks25_nblocks1`` (rigid; rigid case only), ``ks2_reorder`` (drift_correction=False,
Kilosort2's batch reordering), ``ks25_nblocks0`` (the KS2.5 flow without registration).
NT = 65472 (v2.5's value) in every mode, so batches are the same in all of them.

Measured:
- drift estimate (datashift modes): per block, the imposed displacement interpolated to the block
  depth ``yblk`` and to each batch's centre time, against ``-dshift`` (dshift is minus the probe
  displacement up to a constant); each de-meaned; Pearson r and rms error (um) per block and
  pooled over blocks.
- units recovered: ground-truth units at accuracy >= 0.8 (``pykilosort.evaluate``, 0.4 ms).
- cost: datashift wall time / recording time, and each mode's total wall time as a ratio to the
  Kilosort2 mode measured in the same run (the modes are each other's peers).
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import run_json_child, write_result  # noqa: E402
from recordings import write_recording  # noqa: E402

NT = 65536 - 64  # v2.5's batch; passed explicitly so every mode cuts the same batches
MODES = {  # name -> run() parameters
    "ks25_nblocks5": {"drift_correction": True, "nblocks": 5},
    "ks25_nblocks1": {"drift_correction": True, "nblocks": 1},
    "ks2_reorder": {"drift_correction": False},
    "ks25_nblocks0": {"drift_correction": True, "nblocks": 0},
}
PEER = "ks2_reorder"  # the wall-time ratios are against this mode, measured in the same run

# A fresh process per mode: each pays the same start-up, and numba's disk cache keeps the
# compile time out of all but the very first run on a machine.
CHILD = r"""
import json, sys, time
import numpy as np
from pykilosort import run
meta, mode, out = json.loads(open(sys.argv[1]).read()), json.loads(sys.argv[2]), sys.argv[3]
stop = mode.pop("stop_after", None)
t0 = time.perf_counter()
ctx = run(meta["bin"], probe=meta["probe_json"], dir_path=out, device="cpu", fs=meta["fs"],
          stop_after=stop, **mode)
wall = time.perf_counter() - t0
steps = {k: v["wall_s"] for k, v in ctx.read_manifest()["steps"].items()}
arrays = {}
for key in ("dshift", "yblk"):
    try:
        arrays[key] = np.asarray(getattr(ctx.intermediate, key))
    except (AttributeError, KeyError):
        pass  # nblocks=0 and Kilosort2 write no drift estimate
if stop is None:
    arrays.update(times=np.asarray(ctx.spike_times), clusters=np.asarray(ctx.spike_clusters))
np.savez(out + "/result.npz", **arrays)
print(json.dumps({"wall_s": wall, "steps_s": steps}))
"""


def make_recording(work: Path, *, case: str, channels: int, duration: float, seed: int) -> Path:
    """The drifting recording (recordings.write_recording), 40 units on 64 channels as in
    SpikeInterface's own benchmark."""
    return write_recording(work, case=case, channels=channels, duration=duration, seed=seed,
                           n_units=channels * 5 // 8)


def imposed_displacement(truth, times_s: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """(len(times_s), len(depths)) um the tissue at ``depths`` had moved at ``times_s``.

    Each motion's vertical vector times its per-unit factor; the factor is linear in unit depth
    (SpikeInterface's non_rigid_gradient), read off the units and held constant beyond them."""
    vectors = truth["displacement_vectors"][:, 1, :]  # (n_times, n_motions), vertical component
    t = np.arange(vectors.shape[0]) / float(truth["displacement_fs"])
    y = truth["unit_locations"][:, 1]
    order = np.argsort(y)
    out = np.zeros((times_s.size, depths.size))
    for m in range(vectors.shape[1]):
        factor = np.interp(depths, y[order], truth["displacement_unit_factor"][order, m])
        out += np.interp(times_s, t, vectors[:, m])[:, None] * factor[None, :]
    return out


def drift_accuracy(truth, dshift: np.ndarray, yblk: np.ndarray, *, n_samples: int,
                   fs: float) -> dict:
    """r and rms error of -dshift against the imposed displacement, both de-meaned per block
    (dshift is relative to a reference that is not the recording's zero)."""
    n_batches = dshift.shape[0]
    starts = np.arange(n_batches) * NT
    centres = (starts + np.minimum(starts + NT, n_samples)) / 2 / fs  # last batch may be short
    imposed = imposed_displacement(truth, centres, yblk)
    est = -dshift - (-dshift).mean(axis=0)
    ref = imposed - imposed.mean(axis=0)
    per_block = []
    for b in range(yblk.size):
        r = np.corrcoef(est[:, b], ref[:, b])[0, 1] if ref[:, b].std() > 0 else float("nan")
        per_block.append({"yblk_um": float(yblk[b]), "r": float(r),
                          "rms_um": float(np.sqrt(np.mean((est[:, b] - ref[:, b]) ** 2))),
                          "imposed_range_um": float(np.ptp(imposed[:, b]))})
    return {"r": float(np.corrcoef(est.ravel(), ref.ravel())[0, 1]),
            "rms_um": float(np.sqrt(np.mean((est - ref) ** 2))),
            "max_abs_err_um": float(np.abs(est - ref).max()),
            "n_batches": n_batches, "n_blocks": int(yblk.size), "per_block": per_block}


def units_recovered(truth, times, clusters, fs: float) -> dict:
    from pykilosort.evaluate import compare_to_ground_truth

    comp = compare_to_ground_truth(true_times=truth["times"], true_units=truth["units"],
                                   times=times, clusters=clusters, fs=fs, delta_ms=0.4)
    acc = comp.accuracy
    return {"units_ge_0.8": int((acc >= 0.8).sum()), "n_units": int(acc.size),
            "n_clusters": int(np.unique(clusters).size), "accuracy": np.round(acc, 3).tolist()}


def run_mode(meta_path: Path, meta: dict, name: str, *, estimate_only: bool) -> dict:
    mode = dict(MODES[name], NT=NT, **({"stop_after": "datashift"} if estimate_only else {}))
    truth = np.load(meta["truth"])
    with tempfile.TemporaryDirectory(dir=Path(meta["bin"]).parent.parent) as tmp:
        try:
            res = run_json_child(CHILD, meta_path, json.dumps(mode), tmp)
        except RuntimeError as exc:  # a pykilosort failure is a finding: keep the traceback
            return {"error": str(exc)}
        z = np.load(Path(tmp) / "result.npz")
        out = {**res, "x_realtime": meta["duration_s"] / res["wall_s"]}
        if "datashift" in res["steps_s"]:
            out["datashift_s_per_recording_s"] = res["steps_s"]["datashift"] / meta["duration_s"]
        if "dshift" in z.files:
            out["drift"] = drift_accuracy(truth, z["dshift"], z["yblk"],
                                          n_samples=meta["n_samples"], fs=meta["fs"])
        if "times" in z.files:
            out.update(units_recovered(truth, z["times"], z["clusters"], meta["fs"]))
    return out


def modes_for(case: str, estimate_only: bool) -> list[str]:
    if estimate_only:  # only the datashift modes estimate drift
        return ["ks25_nblocks5"] + (["ks25_nblocks1"] if case == "rigid" else [])
    names = ["ks25_nblocks5", "ks25_nblocks1", "ks2_reorder", "ks25_nblocks0"]
    return [n for n in names if case == "rigid" or n != "ks25_nblocks1"]


def add_ratios(row: dict) -> None:
    peer = row["modes"].get(PEER, {}).get("wall_s")
    for res in row["modes"].values():
        if peer and "wall_s" in res:
            res["wall_ratio_to_" + PEER] = res["wall_s"] / peer


def table(rows: list) -> str:
    lines = ["| recording | mode | drift r | drift rms (um) | units >= 0.8 | clusters | "
             "datashift s / recording s | total wall (s) | wall / KS2 mode |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        rec = f"{row['case']} {row['channels']} ch, {row['duration_s']:.0f} s"
        # estimate-only runs stop after datashift: their wall time is not a sorting's
        upto = " (to datashift)" if row.get("estimate_only") else ""
        for name, res in row["modes"].items():
            if "error" in res:
                lines.append(f"| {rec} | {name} | error: see JSON | | | | | | |")
                continue
            d = res.get("drift")
            lines.append("| {} | {} | {} | {} | {} | {} | {} | {:.1f}{} | {} |".format(
                rec, name, f"{d['r']:.3f}" if d else "-", f"{d['rms_um']:.1f}" if d else "-",
                f"{res['units_ge_0.8']} of {res['n_units']}" if "units_ge_0.8" in res else "not run",
                res.get("n_clusters", "-"),
                f"{res['datashift_s_per_recording_s']:.3f}" if "datashift_s_per_recording_s" in res else "-",
                res["wall_s"], upto,
                f"{res['wall_ratio_to_' + PEER]:.2f}" if "wall_ratio_to_" + PEER in res else "-"))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="64 channels, 2 min, both cases")
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 384])
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--cases", nargs="+", default=["rigid", "bump"], choices=["rigid", "bump"])
    ap.add_argument("--estimate-only-channels", type=int, nargs="*", default=[384],
                    help="channel counts run to the datashift step only (stop_after='datashift')")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pyks_drift")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.channels, args.duration = [64], 120.0
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for channels in args.channels:
        for case in args.cases:
            meta_path = make_recording(args.work, case=case, channels=channels,
                                       duration=args.duration, seed=channels + len(case))
            meta = json.loads(meta_path.read_text())
            estimate_only = channels in args.estimate_only_channels
            row = {k: meta[k] for k in ("case", "channels", "duration_s", "units", "seed")}
            row["NT"] = NT
            row["estimate_only"] = estimate_only
            row["modes"] = {name: run_mode(meta_path, meta, name, estimate_only=estimate_only)
                            for name in modes_for(case, estimate_only)}
            add_ratios(row)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = write_result("drift", rows, args.out)
    print(table(result["rows"]))


if __name__ == "__main__":
    main()
