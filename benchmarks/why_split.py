"""Why a ground-truth unit ends up split over several of our clusters: the learned templates that
hold its spikes and, for every pair of them, the tests of learning's triage and of find_merges.

    python benchmarks/why_split.py WORK/static64_120s_seed184.json --run DIR [--ks25]
        [--units 0 1 22] [--out FILE.json]

``META.json`` is a recording written by ``bench_peers.py`` (``recordings.py``); ``--run`` the
folder of a pykilosort run on it (made here if it holds none, resumed otherwise). For each unit
(default: every unit below 0.8 accuracy at the end whose spikes learning spread over 2 or more
clusters), the pieces: clusters of precision >= 0.8 that hold >= 5% of the unit's spikes after
learning (before the merges), with their spike counts and mean amplitude ``mu``.

For each pair of pieces:
- learning's triage (triageTemplates2) drops the smaller of two templates only when their
  correlation is > 0.9 and their amplitudes are within 4 sqrt(10) of each other;
- find_merges merges them only when their similarity is >= 0.5, and their cross-correlogram is
  refractory, Q < 0.2, and significantly so, R < 0.05. R compares the coincidences within +-i ms
  with ``lam``, the number expected by chance in that window; with none observed, R < 0.05
  needs lam > 5.4 (a Gaussian approximation: (0 - lam) / sqrt(2 lam) < -1.645). lam grows with
  the product of the pieces' spike counts over the duration, so with fixed firing rates it grows
  linearly with the recording's length: ``needs_duration_s`` is the length at which the
  window inside the generator's 4-ms dead time (+-3 ms) would reach it.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pykilosort.correlograms import ccg
from pykilosort.merges import MAX_Q, MAX_R, MIN_SIMILARITY, cluster_members
from pykilosort.templates import _TRIAGE_SD, _TRIAGE_SIMILARITY

LAM_NEEDED = 2 * 1.6449 ** 2  # lam at which 0 observed coincidences give R = 0.05
TRIAGE_DMU = 4 * _TRIAGE_SD  # triage_templates' r0 > 1: amplitudes closer than 4 sd
# 1-ms bins +-1..+-3 (lags below 3.5 ms) lie inside the dead time of recordings.py's trains
# (spikeinterface's generate_sorting default, 4 ms)
REFRACTORY_BINS = 3
MATCH_S = 0.4e-3  # a ground-truth spike and ours match within 0.4 ms, as in the benchmark's scoring


def _matches(truth_times: np.ndarray, times: np.ndarray, tol: int) -> np.ndarray:
    """(n_truth,) index into ``times`` (sorted samples) of a spike within ``tol`` samples, or -1."""
    pos = np.clip(np.searchsorted(times, truth_times), 1, times.size - 1)
    left, right = times[pos - 1], times[pos]
    best = np.where(np.abs(truth_times - left) <= np.abs(right - truth_times), pos - 1, pos)
    return np.where(np.abs(times[best] - truth_times) <= tol, best, -1)


def pieces_of(unit_times: np.ndarray, times: np.ndarray, clusters: np.ndarray, *,
              fs: float) -> list[dict]:
    """Clusters (precision >= 0.8 against this unit) holding >= 5% of its spikes; times in
    samples at ``fs`` Hz."""
    order = np.argsort(times, kind="stable")
    hit = _matches(unit_times, times[order], int(round(MATCH_S * fs)))
    found = clusters[order][hit[hit >= 0]]
    out = []
    for k, n in zip(*np.unique(found, return_counts=True)):
        size = int((clusters == k).sum())
        if n >= 0.05 * unit_times.size and n / size >= 0.8:
            out.append({"cluster": int(k), "unit_spikes": int(n), "cluster_spikes": size,
                        "precision": round(n / size, 3)})
    return sorted(out, key=lambda p: -p["unit_spikes"])


def pair_tests(a: dict, b: dict, *, times_s: dict, sim: np.ndarray, mu: np.ndarray,
               duration_s: float) -> dict:
    i, j = a["cluster"], b["cluster"]
    score = ccg(times_s[i], times_s[j])
    ri = np.asarray(score.Ri)
    best = int(np.nanargmin(ri)) + 1 if np.isfinite(ri).any() else None
    # chance coincidences per 1-ms bin (r00) times the bins of one side of the window: lam
    n1, n2 = times_s[i].size, times_s[j].size
    lam_refr = n1 * n2 * 1e-3 / duration_s * REFRACTORY_BINS
    counts, centre = np.asarray(score.K), len(score.K) // 2
    within = counts[centre - REFRACTORY_BINS:centre + REFRACTORY_BINS + 1].sum() - counts[centre]
    sim_ij = float(sim[i, j])
    tests = {"similarity": round(sim_ij, 3), "mu": [round(float(mu[i]), 1), round(float(mu[j]), 1)],
             "Q": round(score.Q, 3), "R": round(score.R, 3), "best_window_ms": best,
             "coincidences_within_refractory": int(within),
             "lam_refractory": round(lam_refr, 2),
             "needs_duration_s": round(duration_s * LAM_NEEDED / lam_refr) if lam_refr else None}
    tests["triage_would_drop"] = bool(sim_ij > _TRIAGE_SIMILARITY
                                      and abs(mu[i] - mu[j]) < TRIAGE_DMU)
    tests["merge_verdict"] = ("similarity < 0.5" if sim_ij < MIN_SIMILARITY else
                              "Q fails" if not score.Q < MAX_Q else
                              "R fails" if not score.R < MAX_R else "merge")
    return tests


def explain(ctx, meta: dict, units: list[int] | None) -> list[dict]:
    truth = np.load(meta["truth"])
    steps = ctx.read_manifest()["steps"]
    before = "duplicates" if "st3" in steps.get("duplicates", {}).get("files", {}) else "learn"
    st3 = np.asarray(ctx.checkpoint(before, "st3"))
    times, clusters = st3["time"].astype(np.int64), st3["template"].astype(np.int64)
    sim = np.asarray(ctx.checkpoint("learn", "simScore"))
    mu = np.asarray(ctx.checkpoint("learn", "mu")).ravel()
    final_t, final_c = np.asarray(ctx.spike_times, np.int64), np.asarray(ctx.spike_clusters)
    fs, duration = float(meta["fs"]), float(meta["duration_s"])
    members = cluster_members(clusters, int(clusters.max()) + 1)
    times_s = {k: times[m] / fs for k, m in enumerate(members) if m.size}
    out = []
    for u in units if units is not None else range(int(truth["units"].max()) + 1):
        ut = np.sort(truth["times"][truth["units"] == u]).astype(np.int64)
        pieces = pieces_of(ut, times, clusters, fs=fs)
        end = pieces_of(ut, final_t, final_c, fs=fs)
        if units is None and (len(pieces) < 2 or (end and end[0]["unit_spikes"] >= 0.8 * ut.size)):
            continue
        pairs = [{"clusters": [a["cluster"], b["cluster"]],
                  **pair_tests(a, b, times_s=times_s, sim=sim, mu=mu, duration_s=duration)}
                 for n, a in enumerate(pieces) for b in pieces[n + 1:]]
        out.append({"unit": int(u), "n_spikes": int(ut.size), "after": before,
                    "pieces": pieces, "pairs": pairs, "at_the_end": end})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("meta", type=Path)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--ks25", action="store_true", help="the Kilosort 2.5 flow (datashift)")
    ap.add_argument("--units", type=int, nargs="+")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from pykilosort import run

    meta = json.loads(args.meta.read_text())
    ctx = run(meta["bin"], probe=meta["probe_json"], dir_path=args.run, fs=meta["fs"],
              drift_correction=args.ks25)
    result = explain(ctx, meta, args.units)
    text = json.dumps({"recording": meta["name"], "ks25": args.ks25, "units": result}, indent=1)
    (args.out.write_text(text + "\n") if args.out else sys.stdout.write(text + "\n"))


if __name__ == "__main__":
    main()
