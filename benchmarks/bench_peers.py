"""pykilosort against Kilosort4 and SpikeInterface's sorters on the same ground-truth recordings:
accuracy, false-positive units, speed, peak memory; and, where a peer finds a unit we miss, the
unit's properties and the step of ours that lost it.

    benchmarks/peers_env.sh VENV            # once: pykilosort, kilosort + torch CPU, the peers
    VENV/bin/python benchmarks/bench_peers.py [--recordings static:64:120 rigid:64:120 ...]
        [--sorters pykilosort_ks2 kilosort4 ...] [--gpu] [--work DIR] [--out FILE.json]

Recordings (``recordings.py``): ``CASE:CHANNELS:SECONDS[:SEED]`` with CASE static, rigid or bump;
15 units per 32 channels; seed by default channels + seconds + the case's index, recorded in the
JSON (``static:64:600:184`` is the units of ``static:64:120`` recorded for 10 minutes).
Sorters (``peer_sorters.py``), each in a fresh process, one at a time, under a wall-clock limit
(``--limit-x-realtime``: a sorter slower than that is stopped and reported as timed out). A
failure or a timeout is a row of the result with the error's tail, never dropped.
Scoring: ``compare_sorter_to_ground_truth`` (exhaustive ground truth, 0.4 ms): units at accuracy
>= 0.8, false-positive units (best agreement < 0.2) and redundant units, accuracy per unit.
Time: the sorter's own wall time (imports excluded) and x real time; memory, sampled every
0.25 s over the sorter's whole process tree: the peak of the summed proportional set size
(``peak_pss_mib``: a page shared by a parent and its forked workers counts once, split between
them) and of the summed resident memory (``peak_rss_mib``: shared pages count once per process,
an upper bound for sorters that fork workers, such as SpikeInterface's n_jobs); the kernel's
exact peak of the main process alone (``peak_rss_self_mib``, VmHWM; results measured before
e9f7bf2 have ``ru_maxrss_self_mib``, which also counted this script's memory at the fork) is
kept beside them.
Measurements already in ``--work`` (timings and spikes) are reused, so a long benchmark can be
stopped and resumed; ``--fresh`` measures again. Scores are always recomputed from the spikes. The markdown table and the figures come from ``plot_peers.py``.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from machine import run_limited, write_result  # noqa: E402
from recordings import write_recording  # noqa: E402

CASES = ("static", "rigid", "bump")
OURS = ("pykilosort_ks2", "pykilosort_ks25")
CPU_SORTERS = OURS + ("kilosort4", "spykingcircus2", "tridesclous2", "tridesclous2_motion",
                      "mountainsort5")
GPU_SORTERS = ("pykilosort_ks2_cuda", "pykilosort_ks25_cuda", "kilosort4_cuda")
VARIANTS = ("pykilosort_ks2_th8",)  # ours with a parameter changed: asked for by name only
# The committed CPU table (benchmarks/results/README.md, "Peers")
DEFAULT_RECORDINGS = ("static:64:120", "rigid:64:120", "bump:64:120", "static:32:120",
                      "static:128:120", "static:384:120")
# a cluster "holds" a unit when it shares at least this share of the unit's spikes (see fate)
_HELD_SHARE = 0.05


def parse_recording(spec: str) -> dict:
    """CASE:CHANNELS:SECONDS[:SEED]; the default seed is CHANNELS + SECONDS + the case's index.
    The same seed at another duration gives the same units (templates, positions, rates) with
    new spike trains."""
    try:
        case, channels, seconds, *seed = spec.split(":")
        rec = {"case": case, "channels": int(channels), "duration": float(seconds)}
        if len(seed) > 1:
            raise ValueError
        rec["seed"] = int(seed[0]) if seed else None
    except ValueError:
        raise SystemExit(f"recording {spec!r}: expected CASE:CHANNELS:SECONDS[:SEED], "
                         "e.g. static:64:120")
    if rec["case"] not in CASES or rec["channels"] % 32:
        raise SystemExit(f"recording {spec!r}: CASE is one of {CASES}, CHANNELS a multiple of 32")
    if rec["seed"] is None:
        rec["seed"] = rec["channels"] + int(rec["duration"]) + CASES.index(rec["case"])
    rec["n_units"] = rec["channels"] * 15 // 32
    return rec


def sorting_of(times, clusters, fs: float):
    import spikeinterface.core as si

    return si.NumpySorting.from_samples_and_labels([np.asarray(times, np.int64)],
                                                   [np.asarray(clusters, np.int64)], fs)


def score(truth, times, clusters, fs: float) -> dict:
    """SpikeInterface's comparison: counts, per-unit accuracy, and the unit's best-agreeing
    cluster (whatever the pairing): its agreement, recall (share of the unit's spikes it holds)
    and precision (share of its spikes that are the unit's)."""
    from spikeinterface.comparison import compare_sorter_to_ground_truth

    c = compare_sorter_to_ground_truth(truth, sorting_of(times, clusters, fs), exhaustive_gt=True,
                                       delta_time=0.4)
    acc = c.get_performance()["accuracy"].to_numpy(float)
    agreement = c.agreement_scores.to_numpy()
    n_units = acc.size
    best = {"best_agreement": np.zeros(n_units), "best_recall": np.zeros(n_units),
            "best_precision": np.zeros(n_units)}
    if agreement.size:
        col = agreement.argmax(axis=1)
        rows = np.arange(n_units)
        matches = c.match_event_count.to_numpy()[rows, col]
        best["best_agreement"] = agreement[rows, col]
        best["best_recall"] = matches / np.maximum(c.event_counts1.to_numpy(), 1)
        best["best_precision"] = matches / np.maximum(c.event_counts2.to_numpy()[col], 1)
    return {"units_ge_0.8": int((acc >= 0.8).sum()), "false_positive": c.count_false_positive_units(),
            "redundant": c.count_redundant_units(), "n_clusters": int(np.unique(clusters).size),
            "accuracy": np.round(acc, 3).tolist(),
            **{k: np.round(v, 3).tolist() for k, v in best.items()},
            "fate": [fate(c, u) if a < 0.8 else "found" for u, a in enumerate(acc)]}


def fate(comparison, unit: int) -> str:
    """What became of a unit that is not found at accuracy >= 0.8, from the spikes every cluster
    shares with it. Only clusters holding >= 5% of its spikes count: a cluster of rate f shares
    about f * 2 * delta_time of them by chance (0.4% at 5 Hz), which summed over the ~160
    clusters of a 384-channel sort would hold half of any unit's spikes. 'split over N' (N
    clusters of precision >= 0.8 hold >= 80% of its spikes between them), 'undetected' (the
    clusters holding >= 5% of it hold < 50% together), 'mixed' (its best cluster's precision <
    0.8: merged with other units), else 'partial'."""
    m = comparison.match_event_count.to_numpy()[unit].astype(float)
    n_true = max(comparison.event_counts1.to_numpy()[unit], 1)
    precision = m / np.maximum(comparison.event_counts2.to_numpy(), 1)
    held = m >= _HELD_SHARE * n_true
    pure = held & (precision >= 0.8)
    if m[held].sum() < 0.5 * n_true:
        return "undetected"
    if pure.sum() >= 2 and m[pure].sum() >= 0.8 * n_true:
        return f"split over {int(pure.sum())}"
    return "mixed" if precision[m.argmax()] < 0.8 else "partial"


def step_losses(truth, z, fs: float) -> dict:
    """Our runs: per unit, accuracy after each step; the step at which a unit not found at the
    end was lost (None: found; 'learn': learning never reached 0.8); and the unit's best
    agreement with any template after learning (< 0.2: no template of its own was learned,
    0.2-0.8: a template that mixes it with another unit or holds only part of its spikes)."""
    steps = [k[:-6] for k in z.files if k.endswith("_times")]
    scores = {s: score(truth, z[s + "_times"], z[s + "_clusters"], fs) for s in steps}
    acc = {s: np.array(v["accuracy"]) for s, v in scores.items()}
    final = np.array(score(truth, z["times"], z["clusters"], fs)["accuracy"])
    lost = [None] * final.size
    for u in np.flatnonzero(final < 0.8):
        lost[u] = "learn" if acc["learn"][u] < 0.8 else next(
            (s for s in steps if acc[s][u] < 0.8), "export")
    return {"steps": steps, "accuracy_after": {s: a.round(3).tolist() for s, a in acc.items()},
            "lost_at": lost, "fate_after_learn": scores["learn"]["fate"],
            **{"learn_" + k: scores["learn"][k] for k in ("best_agreement", "best_recall",
                                                          "best_precision")}}


def failure_text(returncode: int, stderr: str) -> str:
    """The error's tail; for a process killed by a signal (SIGKILL from the kernel's out-of-memory
    killer leaves no traceback), the signal's name."""
    import signal

    text = stderr[-2500:]
    if returncode < 0:
        name = signal.Signals(-returncode).name
        why = " (the out-of-memory killer sends this: see dmesg)" if name == "SIGKILL" else ""
        text += f"\nkilled by {name}{why}"
    return text.strip() or f"exit status {returncode}, no error text"


def measure(name: str, meta_path: Path, meta: dict, *, limit_s: float, scratch: Path,
            spikes_path: Path) -> dict:
    """Run one sorter in a fresh process under the limit; its spikes are kept at spikes_path."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        env = dict(os.environ, PYKILOSORT_PROGRESS="0")
        proc = run_limited([sys.executable, str(HERE / "peer_sorters.py"), name, str(meta_path), tmp],
                           timeout_s=limit_s, env=env)
        res = {"peak_rss_mib": round(proc["peak_tree_rss_mib"], 1),
               "peak_pss_mib": round(proc["peak_tree_pss_mib"], 1),
               "outer_wall_s": round(proc["outer_wall_s"], 1)}
        if proc["timed_out"]:
            return {**res, "status": "timeout", "limit_s": limit_s}
        if proc["returncode"] != 0:
            return {**res, "status": "failed", "returncode": proc["returncode"],
                    "error": failure_text(proc["returncode"], proc["stderr_tail"])}
        res.update(json.loads(proc["stdout_tail"].strip().splitlines()[-1]), status="ok")
        res["x_realtime"] = meta["duration_s"] / res["wall_s"]
        spikes_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "spikes.npz", spikes_path)
    return res


def evaluate(res: dict, meta: dict, spikes_path: Path) -> dict:
    """Scores of a measured run (recomputed from its spikes every time: scoring is not cached)."""
    from spikeinterface.core import NumpySorting

    if res["status"] != "ok":
        return res
    truth_npz = np.load(meta["truth"])
    truth = NumpySorting.from_samples_and_labels([truth_npz["times"]], [truth_npz["units"]],
                                                 meta["fs"])
    z = np.load(spikes_path)
    res = {**res, **score(truth, z["times"], z["clusters"], meta["fs"])}
    if "good" in z.files:  # ours: the clusters set_cutoff/get_good_units call good
        keep = np.isin(z["clusters"], np.flatnonzero(z["good"]))
        good = score(truth, z["times"][keep], z["clusters"][keep], meta["fs"])
        res["good_only"] = {k: good[k] for k in ("units_ge_0.8", "false_positive", "redundant",
                                                 "n_clusters")}
    if "learn_times" in z.files:
        res["diagnosis"] = step_losses(truth, z, meta["fs"])
    return res


def where_we_lose(row: dict) -> list:
    """Every (our flow, peer) where the peer has more units >= 0.8: the units it finds and we
    do not, with their properties and the step of ours that lost them."""
    table = {k: v for k, v in row["units_table"].items() if isinstance(v, list)}  # per unit
    out = []
    for ours in (s for s in OURS if row["sorters"].get(s, {}).get("status") == "ok"):
        mine = row["sorters"][ours]
        for peer, res in row["sorters"].items():
            if (peer in OURS + VARIANTS or res.get("status") != "ok"
                    or res["units_ge_0.8"] <= mine["units_ge_0.8"]):
                continue
            missed = [u for u in range(len(res["accuracy"]))
                      if res["accuracy"][u] >= 0.8 and mine["accuracy"][u] < 0.8]
            out.append({"ours": ours, "peer": peer, "ours_units": mine["units_ge_0.8"],
                        "peer_units": res["units_ge_0.8"], "missed": [
                            {"unit": u, "our_accuracy": mine["accuracy"][u],
                             "peer_accuracy": res["accuracy"][u],
                             "our_best_agreement": mine["best_agreement"][u],
                             "lost_at": mine["diagnosis"]["lost_at"][u],
                             "fate": mine["fate"][u],
                             "fate_after_learn": mine["diagnosis"]["fate_after_learn"][u],
                             **{k: mine["diagnosis"][k][u] for k in (
                                 "learn_best_agreement", "learn_best_recall",
                                 "learn_best_precision")},
                             **{k: v[u] for k, v in table.items()}} for u in missed]})
    return out


def stored_peers(paths: list, name: str, exclude: list) -> dict:
    """Scored results of the sorters not in ``exclude`` for recording ``name`` from earlier
    results JSONs (the first file holding a sorter wins); each is marked with its source."""
    out = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["rows"]:
            if row["name"] != name:
                continue
            for sorter, res in row["sorters"].items():
                if sorter not in exclude and sorter not in out:
                    out[sorter] = {**res, "stored_in": Path(path).name}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recordings", nargs="+", default=list(DEFAULT_RECORDINGS),
                    help="CASE:CHANNELS:SECONDS, e.g. static:64:120 rigid:64:120 bump:384:600")
    ap.add_argument("--sorters", nargs="+", default=list(CPU_SORTERS),
                    choices=CPU_SORTERS + GPU_SORTERS + VARIANTS)
    ap.add_argument("--gpu", action="store_true", help="also the CUDA runs of ours and Kilosort4")
    ap.add_argument("--limit-x-realtime", type=float, default=0.1,
                    help="stop a sorter slower than this fraction of real time (default 0.1: "
                         "20 min for a 2-min recording)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pyks_peers")
    ap.add_argument("--fresh", action="store_true", help="measure again what --work holds")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--peers-from", type=Path, nargs="+", default=[],
                    help="earlier results JSONs: every sorter not in --sorters is taken, scored, "
                         "from the row of the same recording there (re-measure ours, keep peers)")
    args = ap.parse_args()
    sorters = list(args.sorters) + (list(GPU_SORTERS) if args.gpu else [])
    import spikeinterface.core as si

    si.set_global_job_kwargs(progress_bar=False)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.recordings:
        rec = parse_recording(spec)
        meta_path = write_recording(args.work, case=rec["case"], channels=rec["channels"],
                                    duration=rec["duration"], seed=rec["seed"],
                                    n_units=rec["n_units"], units_table=True)
        meta = json.loads(meta_path.read_text())
        row = {k: meta[k] for k in ("name", "case", "channels", "duration_s", "units", "seed")}
        row["sha256"] = meta.get("sha256")  # of the int16 binary
        row["units_table"] = meta["units_table"]
        row["sorters"] = {}
        for name in sorters:
            cached = args.work / "results" / meta["name"] / f"{name}.json"
            spikes_path = cached.with_suffix(".npz")
            if cached.exists() and not args.fresh:
                res = json.loads(cached.read_text())
            else:
                t0 = time.strftime("%H:%M:%S")
                print(f"[{t0}] {meta['name']}: {name}", file=sys.stderr, flush=True)
                res = measure(name, meta_path, meta, scratch=args.work, spikes_path=spikes_path,
                              limit_s=meta["duration_s"] / args.limit_x_realtime)
                res["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(res))  # written last: marks a finished measurement
            res = row["sorters"][name] = evaluate(res, meta, spikes_path)
            print(f"    {name}: {res['status']} " + (
                f"{res['units_ge_0.8']} units >= 0.8, {res['false_positive']} false positive, "
                f"{res['x_realtime']:.2f}x real time, {res['peak_rss_mib']:.0f} MiB"
                if res["status"] == "ok" else ""), file=sys.stderr, flush=True)
        row["sorters"].update(stored_peers(args.peers_from, meta["name"], sorters))
        row["where_we_lose"] = where_we_lose(row)
        rows.append(row)
    result = write_result("peers", rows, None)
    result["command"] = " ".join(sys.argv)
    out = args.out or args.work / f"{time.strftime('%Y-%m-%d')}-peers.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
