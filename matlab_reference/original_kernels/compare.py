"""The original Kilosort2 v2.0 mex kernels (and Kilosort 2.5's spikedetector3), compiled for the
CPU, against our call_mex.

    python matlab_reference/original_kernels/compare.py --checkout <Kilosort v2.0 checkout> [--fma]
        [--checkout-ks25 <Kilosort 2.5 checkout>] [--only spikedetector3 --merge]

For each mex: (a) the captured MATLAB calls in matlab_reference/data/mex/*.mat, (b) full-size
synthetic calls (synthetic.py): mexMPnu8 on 65600 x 32 channels x 128 templates in stable and
fast mode and on a 65472-sample batch with spikes in its "holes", and one realistic call of each
other mex; Kilosort 2.5's spikedetector3 (from --checkout-ks25; its rows are skipped without it)
on a full-size batch and two short ones. The original runs through its own host sequence (hosts.py, host_mpnu8.py) on the
CUDA-on-CPU executor; ours is ``pykilosort.kernels.mex.call_mex(name, args)`` (device='cpu').

Outputs the mex returns in the order of its atomics (spikes) are compared as sets: each side is
put in a canonical order first (mexMPnu8: by spike time, then by the round that found the spike;
mexThSpkPC: by channel, then features; mexGetSpikes2: by snippet values; spikedetector3: by
(time, centre), unique per spike). Per output: exact
equality, max |orig - ours|, and that over max |ours| ("rel"). mexClustering2's dV is compared
where the mex writes it (iMatch pairs); the rest of its buffer is never initialised.

--fma builds the kernels with plain a*b+c fused into FMAs, as nvcc does by default (see
README: a GPU run of the original should resemble that build). Writes results.json (or --out)
and prints the markdown table for matlab_reference/README.md; --merge (with --only) replaces
only the rerun mex's rows of an existing --out file.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE.parent) not in sys.path:  # run as a script: make the package importable
    sys.path.insert(0, str(HERE.parent))

from captured_calls import load_call  # noqa: E402
from original_kernels import hosts, host_mpnu8, hosts_ks25, synthetic  # noqa: E402
from original_kernels.translate import KS25_FILES, compile_mex  # noqa: E402

MEX_DATA = ROOT / "matlab_reference" / "data" / "mex"

OUTPUT_NAMES = {
    "mexThSpkPC": ("uS", "idchan"),
    "mexClustering2": ("dWU", "iclust", "dx", "nsp", "dV"),
    "mexDistances2": ("iclust", "ds"),
    "mexGetSpikes2": ("dWU", "cmap"),
    "mexSVDsmall2": ("W", "U", "mu"),
    "mexMPnu8": ("st0", "id0", "x0", "featW", "dWU0", "drez", "nsp0", "featPC", "vexp", "errmsg"),
    "mexWtW2": ("WtW",),
    "spikedetector3": ("dout", "kkmax", "st", "cF"),
}
RUNNERS = {"mexThSpkPC": hosts.run_mexThSpkPC, "mexGetSpikes2": hosts.run_mexGetSpikes2,
           "mexSVDsmall2": hosts.run_mexSVDsmall2, "mexWtW2": hosts.run_mexWtW2,
           "mexClustering2": hosts.run_mexClustering2, "mexDistances2": hosts.run_mexDistances2,
           "mexMPnu8": host_mpnu8.run_mexMPnu8, "spikedetector3": hosts_ks25.run_spikedetector3}
KS25_MEX = KS25_FILES  # compiled from the Kilosort 2.5 checkout (--checkout-ks25)


@dataclass
class Case:
    label: str
    mex: str
    args: list
    source: str
    notes: dict = field(default_factory=dict)


# ------------------------------------------------------------------ cases
def load_captured(stem: str):
    """(name, MATLAB arguments) of a captured call (captured_calls.load_call)."""
    name, args, _ = load_call(MEX_DATA / f"{stem}.mat")
    return name, args


def captured_cases() -> list[Case]:
    cases = []
    for path in sorted(MEX_DATA.glob("mex*.mat")):
        name, args = load_captured(path.stem)
        cases.append(Case(path.stem, name, args, "captured"))
    return cases


def synthetic_cases(quick: bool = False) -> list[Case]:
    out = []
    for make in (synthetic.thspkpc_call, synthetic.getspikes2_call, synthetic.svdsmall2_call,
                 synthetic.wtw2_call, synthetic.clustering2_call, synthetic.distances2_call):
        c = make()
        out.append(Case(f"{c.name} full-size", c.name, c.args, "synthetic", c.notes))
    out += spikedetector3_cases()
    mp = [] if quick else [
        ("stable", dict(stable=True)), ("fast", dict(stable=False)),
        ("holes NT=65472 stable", dict(stable=True, NT=synthetic.NT_HOLES, hole_spikes=8, features=0))]
    for label, kw in mp:
        c = synthetic.mpnu8_call(**kw)
        nt = c.args[0][0, 0]
        out.append(Case(f"mexMPnu8 {label}" + ("" if "NT=" in label else f" NT={nt:.0f}"),
                        c.name, c.args, "synthetic", c.notes))
    return out


def spikedetector3_cases() -> list[Case]:
    """A v2.5-size batch (NT 65536, 64 channels) and two short ones: a partial last tile, and
    fewer than 1024 samples (no score or spike block launched: dout all 0, no spikes)."""
    out = []
    for nt, n_spikes in ((synthetic.NT_KS25, 500), (synthetic.NT_KS25_SHORT, 40),
                         (synthetic.NT_KS25_NO_BLOCKS, 10)):
        c = synthetic.spikedetector3_call(NT=nt, n_spikes=n_spikes)
        nchan, n_up = c.args[1].shape[1], c.notes["NchanUp"]
        out.append(Case(f"spikedetector3 NT={nt} {nchan}ch {n_up}up", c.name, c.args,
                        "synthetic", c.notes))
    return out


# ------------------------------------------------------------------ comparison
def output_diff(orig, ours, mask=None) -> dict:
    """Exact equality and max abs / rel difference of one output (after alignment)."""
    a, b = np.asarray(orig), np.asarray(ours)
    if a.size != b.size:
        return {"shape_orig": list(a.shape), "shape_ours": list(b.shape), "exact": False,
                "max_abs": None, "rel": None}
    b = b.reshape(a.shape, order="F") if a.shape != b.shape else b
    if mask is not None:
        a, b = a[mask], b[mask]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = {"shape": list(np.shape(orig)), "dtype": str(np.asarray(orig).dtype), "compared": int(a.size),
         "exact": bool(np.array_equal(a64, b64, equal_nan=True)),
         "nan_orig": int(np.isnan(a64).sum()), "nan_ours": int(np.isnan(b64).sum())}
    both = ~(np.isnan(a64) | np.isnan(b64))
    diff = np.abs(a64 - b64)[both]
    scale = np.abs(b64[both]).max() if both.any() else 0.0
    d["max_abs"] = float(diff.max()) if diff.size else 0.0
    d["rel"] = float(d["max_abs"] / scale) if scale > 0 else (0.0 if d["max_abs"] == 0 else float("inf"))
    return d


def _lex_columns(m: np.ndarray) -> np.ndarray:
    """Order of the columns of a 2-D array, lexicographic over rows (first row first)."""
    return np.lexsort(m[::-1]) if m.size else np.arange(m.shape[1])


def _keys_agreement(k_orig, k_ours) -> dict:
    a, b = Counter(k_orig), Counter(k_ours)
    common = sum((a & b).values())
    return {"orig": len(k_orig), "ours": len(k_ours), "common": common,
            "orig_only": len(k_orig) - common, "ours_only": len(k_ours) - common}


def _match(k_orig, k_ours):
    """Indices (i_orig, i_ours) of equal keys (repeated keys matched in their order)."""
    pos: dict = {}
    for i, k in enumerate(k_ours):
        pos.setdefault(k, []).append(i)
    io, iu = [], []
    for i, k in enumerate(k_orig):
        if pos.get(k):
            io.append(i)
            iu.append(pos[k].pop(0))
    return np.array(io, int), np.array(iu, int)


def align_mpnu8(run, ours):
    """Original's spikes by (time, round): the order of ours. Spikes match on (time, template,
    k-th at that time); per-spike outputs are compared on the matched spikes."""
    o = run.outputs
    st = o[0].ravel()
    order = np.lexsort((run.internals["round"], st))

    def keys(st, ids):
        seen: Counter = Counter()
        out = []
        for t, f in zip(st.tolist(), ids.tolist()):
            out.append((t, f, seen[t]))
            seen[t] += 1
        return out

    k_orig = keys(st[order], o[1].ravel()[order])
    k_ours = keys(np.asarray(ours[0]).ravel(), np.asarray(ours[1]).ravel())
    io, iu = _match(k_orig, k_ours)
    sel_o, sel_u = order[io], iu
    a, b = list(o), [np.asarray(x) for x in ours]
    for i in (0, 1, 2, 8):
        a[i], b[i] = o[i].ravel()[sel_o], b[i].ravel()[sel_u]
    a[3], b[3] = o[3][:, sel_o], b[3][:, sel_u]
    a[7], b[7] = o[7][:, :, sel_o], b[7][:, :, sel_u]
    info = {"spikes": _keys_agreement(k_orig, k_ours),
            "same_order": bool(np.array_equal(st, np.asarray(ours[0]).ravel())),
            "rounds_with_spikes": int((np.diff(run.internals["count"]) > 0).sum())}
    return a, b, {}, info


def align_thspkpc(run, ours):
    """Spikes (columns of uS with idchan) in canonical order: channel, then features."""
    a, b = [np.asarray(x) for x in run.outputs], [np.asarray(x) for x in ours]
    oa = _lex_columns(np.vstack([a[1].ravel()[None], a[0]]).astype(np.float64))
    ob = _lex_columns(np.vstack([b[1].ravel()[None], b[0]]).astype(np.float64))
    info = {"spikes": _keys_agreement(a[1].ravel().tolist(), b[1].ravel().tolist()),
            "same_order": bool(np.array_equal(a[1].ravel(), b[1].ravel()))}  # channel sequence
    if a[0].shape == b[0].shape:
        a, b = [a[0][:, oa], a[1].ravel()[oa]], [b[0][:, ob], b[1].ravel()[ob]]
    return a, b, {}, info


def align_getspikes2(run, ours):
    """Snippets (nt0, Nchan, n) in canonical order of their values."""
    a, b = [np.asarray(x) for x in run.outputs], [np.asarray(x) for x in ours]
    n_a, n_b = a[0].shape[2] if a[0].ndim == 3 else 0, b[0].shape[2] if b[0].ndim == 3 else 0
    info = {"spikes": {"orig": n_a, "ours": n_b},
            "same_order": bool(a[0].shape == b[0].shape and np.array_equal(a[0], b[0]))}
    if n_a == n_b and n_a:
        fa, fb = a[0].reshape(-1, n_a, order="F"), b[0].reshape(-1, n_b, order="F")
        sa, sb = fa[:, _lex_columns(fa)], fb[:, _lex_columns(fb)]
        keys_a = [c.tobytes() for c in sa.T]
        keys_b = [c.tobytes() for c in sb.T]
        info["spikes"] = _keys_agreement(keys_a, keys_b)
        a[0], b[0] = sa, sb
    return a, b, {}, info


def align_spikedetector3(run, ours, args):
    """Spikes (columns of st and cF) matched on (time, centre), the pair is unique per spike;
    dout and kkmax elementwise. Where kkmax differs, the two candidates' scores (float64, from
    the data) tell whether it is a near tie that rounding decided (info['kkmax_diff'])."""
    a, b = [np.asarray(x) for x in run.outputs], [np.asarray(x) for x in ours]
    k_orig = list(zip(a[2][0].tolist(), a[2][1].tolist()))
    k_ours = list(zip(b[2][0].tolist(), b[2][1].tolist()))
    io, iu = _match(k_orig, k_ours)
    info = {"spikes": _keys_agreement(k_orig, k_ours),
            "same_order": bool(np.array_equal(a[2][:2], b[2][:2])),
            "counter_orig": run.internals["counter"]}
    if not np.array_equal(a[1], b[1]) and a[1].shape == b[1].shape:
        info["kkmax_diff"] = kkmax_ties(args, a[1], b[1])
    a[2], b[2] = a[2][:, io], b[2][:, iu]
    a[3], b[3] = a[3][:, io], b[3][:, iu]
    return a, b, {}, info


def kkmax_ties(args, kk_orig, kk_ours, limit=200) -> dict:
    """Where kkmax differs: how many places, and the largest relative gap |s1 - s2| / max(s1, s2)
    between the float64 scores of the two candidates (at most ``limit`` places evaluated)."""
    P, data, W, iC, dist, v2 = args[:6]
    P = np.asarray(P, np.float64).ravel()
    nrank, sig = int(P[4]), float(P[9])
    ts, us = np.nonzero(kk_orig != kk_ours)
    gaps = []
    for t, u in list(zip(ts, us))[:limit]:
        s = [_score64(data, W, iC, dist, v2, sig, nrank, t, u, int(kk[t, u]))
             for kk in (kk_orig, kk_ours)]
        gaps.append(abs(s[0] - s[1]) / max(s[0], s[1]))
    return {"places": int(ts.size), "evaluated": len(gaps),
            "max_rel_gap": float(max(gaps)) if gaps else 0.0}


def _score64(data, W, iC, dist, v2, sig, nrank, t, u, kk) -> float:
    """max(a, 0)^2 / v2 of candidate kk = r + k*Nrank at (t, u) in float64: the exact value both
    float32 computations round (the original's dfilt is 0 past its filtered range: not modelled,
    NaN where the template would run past the batch)."""
    r, k = kk % nrank, kk // nrank
    x = np.asarray(data, np.float64)[t:t + W.shape[0], np.asarray(iC)[:, u]]  # (nt0, NchanNear)
    if x.shape[0] < W.shape[0]:
        return float("nan")
    filt = np.asarray(W, np.float64)[:, r] @ x                                  # dfilt[t, iC, r]
    sA = np.exp(-np.asarray(dist, np.float64)[:, u] ** 2 / ((1 + k) ** 2 * sig ** 2))
    a = max(float(sA @ filt), 0.0)
    return a * a / float(np.asarray(v2)[k, u])


def align_clustering2(run, ours, args):
    """dV is written only where iMatch[call[s], f] (computeCost); compare it there."""
    _, _, _, _, call, iMatch, _ = args
    mask = np.asarray(iMatch, bool)[np.asarray(call).ravel().astype(int), :]
    info = {"dV_undefined": int((~mask).sum())}
    return list(run.outputs), list(ours), {4: mask}, info


def compare_case(case: Case, checkout, *, fma: bool = False) -> dict:
    """One row; ``checkout``: the Kilosort checkout that holds case.mex's .cu file."""
    from pykilosort.kernels.mex import call_mex

    compile_mex(checkout, case.mex, fma=fma)  # a first build is not part of the timing
    t0 = time.perf_counter()
    run = RUNNERS[case.mex](checkout, case.args, fma=fma)
    t_orig = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = [np.asarray(x) for x in call_mex(case.mex, case.args, device="cpu")]
    t_ours = time.perf_counter() - t0
    a, b, masks, info = align(case, run, ours)
    outputs = {name: output_diff(x, y, masks.get(i))
               for i, (name, x, y) in enumerate(zip(OUTPUT_NAMES[case.mex], a, b))}
    if case.mex == "mexMPnu8" and case.notes.get("hole_st"):
        info["hole"] = _hole_report(case, run, ours)
    if (case.mex == "mexMPnu8" and not fma and not outputs["dWU0"]["exact"]
            and case.args[0].ravel()[16] == 0):
        info["dWU0_time_ordered"] = _time_ordered_dwu(case, checkout, fma, ours)
    return {"case": case.label, "mex": case.mex, "source": case.source,
            "build": "fma" if fma else "no-fma", "exact": all(d["exact"] for d in outputs.values()),
            "outputs": outputs, **info, "rejected_launches": [list(map(str, r)) for r in run.rejected], "kernels": run.kernels,
            "seconds_original": round(t_orig, 2), "seconds_ours": round(t_ours, 2)}


def align(case: Case, run, ours):
    """(orig outputs, our outputs, {output index: mask}, info) in comparable order."""
    if case.mex == "mexMPnu8":
        return align_mpnu8(run, ours)
    if case.mex == "mexThSpkPC":
        return align_thspkpc(run, ours)
    if case.mex == "mexGetSpikes2":
        return align_getspikes2(run, ours)
    if case.mex == "mexClustering2":
        return align_clustering2(run, ours, case.args)
    if case.mex == "spikedetector3":
        return align_spikedetector3(run, ours, case.args)
    return list(run.outputs), ours, {}, {}


def _time_ordered_dwu(case: Case, checkout, fma: bool, ours) -> dict:
    """Fast mode: the original's dWU0 when its average_snips runs in time order (the diagnostic
    host_mpnu8 option), against ours."""
    run = host_mpnu8.run_mexMPnu8(checkout, case.args, fma=fma, sort_in_fast_mode=True)
    return output_diff(run.outputs[4], ours[4])


def _hole_report(case: Case, run, ours) -> dict:
    """Planted spikes in the unexamined start times: found (within 2 samples) by the original,
    by call_mex, and by our kernel without the legacy geometry (legacy_block=None)."""
    from pykilosort.kernels.mpnu8 import match_templates

    P = case.args[0].ravel()
    _, data, U, W, mu, iC, iW, UtU, iList, wPCA = case.args
    full = match_templates(data, U=U, W=W, mu=mu.ravel(), iC=iC, iW=iW.ravel(), UtU=UtU.astype(bool),
                           th=P[2], th_average=P[15], lam=P[7], n_rounds=int(P[3]),
                           stable_mode=P[16] > 0, legacy_block=None)
    planted = np.array(case.notes["hole_st"])

    def found(st):
        st = np.asarray(st).ravel()
        return int(sum(np.any(np.abs(st - t) <= 2) for t in planted))

    lo, hi = case.notes["hole"]
    return {"range": [int(lo), int(hi)], "planted": int(planted.size),
            "found_original": found(run.outputs[0]), "found_ours": found(ours[0]),
            "found_without_holes": found(full.st)}


# ------------------------------------------------------------------ verdicts
# Unfused build (C++ semantics, each operation rounded): the twins reproduce the original's
# operations in its order, so every output must be identical, with one expected exception: in
# fast mode the original sums dWU0 in discovery order (round by round) and ours in time order;
# the row then records the original rerun with a time-ordered sum (host_mpnu8's diagnostic
# option), which must be identical, and the difference must stay at double rounding level.
FAST_DWU_REL = 1e-12
# FMA build (plain a*b+c fused, as nvcc does by default): integer outputs and spike sets must be
# identical; floats within these bounds of max|ours|: float32 ~32 ulp, dWU0 (double sums of
# float32 residuals) 1e-7, mexSVDsmall2 (all double) 1e-12.
FMA_REL = {"float32": 4e-6, "float64": 1e-12}
FMA_REL_OVERRIDE = {("mexMPnu8", "dWU0"): 1e-7}
# spikedetector3's kkmax is the argmax of 30 float32 scores: with FMA, a few near ties may go the
# other way. Accepted where every differing place was evaluated and the two candidates' exact
# scores are within this relative gap (the float32 bound above); st (kkmax at the spikes) must
# still be identical.
FMA_KKMAX_TIE_REL = FMA_REL["float32"]


def _kkmax_near_ties(row) -> bool:
    d = row.get("kkmax_diff")
    return bool(d) and d["evaluated"] == d["places"] and d["max_rel_gap"] <= FMA_KKMAX_TIE_REL


def _spikes_agree(row) -> bool:
    sp = row.get("spikes")
    return sp is None or (sp["orig"] == sp["ours"] and sp.get("common", sp["orig"]) == sp["orig"])


def verdict(row: dict) -> str:
    """'identical', 'expected: ...', 'within FMA tolerance' or 'FINDING: ...'."""
    bad = []
    if not _spikes_agree(row):
        bad.append("spike sets differ")
    for name, d in row["outputs"].items():
        if d["exact"]:
            continue
        if d.get("max_abs") is None:
            bad.append(f"{name} shape")
            continue
        if row["build"] == "fma" and d["dtype"] in FMA_REL:
            if d["rel"] <= FMA_REL_OVERRIDE.get((row["mex"], name), FMA_REL[d["dtype"]]):
                continue
        if name == "kkmax" and row["build"] == "fma" and _kkmax_near_ties(row):
            continue
        if name == "dWU0" and row["build"] == "no-fma" and "dWU0_time_ordered" in row:
            if row["dWU0_time_ordered"]["exact"] and d["rel"] <= FAST_DWU_REL:
                continue
        bad.append(f"{name} rel {d['rel']:.1e}")
    if bad:
        return "FINDING: " + ", ".join(bad)
    if row["exact"] and _spikes_agree(row):
        return "identical"
    if row["build"] == "fma":
        return "within FMA tolerance"
    return "expected: fast-mode dWU0 summation order"


# ------------------------------------------------------------------ report
def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def summary(row: dict) -> str:
    """The differing outputs of a row with max abs / rel, or 'all identical'."""
    diff = [f"{n} {_fmt(d['max_abs'])} / {_fmt(d['rel'])}" if d.get("max_abs") is not None
            else f"{n} shape {d.get('shape_orig')} vs {d.get('shape_ours')}"
            for n, d in row["outputs"].items() if not d["exact"]]
    return "; ".join(diff) if diff else f"all {len(row['outputs'])} identical"


def markdown(rows: list[dict]) -> str:
    lines = ["| mex | case | build | verdict | spikes orig / ours / common | outputs: max abs / rel where not identical | s (orig, ours) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = r.get("spikes")
        spikes = f"{sp['orig']} / {sp['ours']} / {sp.get('common', '-')}" if sp else "-"
        extra = []
        if "dV_undefined" in r:
            extra.append(f"dV on {r['outputs']['dV']['compared']} written pairs")
        if "hole" in r:
            h = r["hole"]
            extra.append(f"hole {h['range']}: {h['planted']} planted, found {h['found_original']} orig / "
                         f"{h['found_ours']} ours / {h['found_without_holes']} without holes")
        if "dWU0_time_ordered" in r:
            t = r["dWU0_time_ordered"]
            extra.append("dWU0 with the original summed in time order: " +
                         ("identical" if t["exact"] else f"{_fmt(t['max_abs'])} / {_fmt(t['rel'])}"))
        if "kkmax_diff" in r:
            k = r["kkmax_diff"]
            extra.append(f"kkmax differs at {k['places']} of {np.prod(r['outputs']['kkmax']['shape'])} "
                         f"(t, centre), near ties: the two candidates' exact scores within "
                         f"{_fmt(k['max_rel_gap'])} relative")
        if "same_order" in r:
            extra.append("same order" if r["same_order"] else "order differs (sets compared)")
        text = summary(r) + ("; " + "; ".join(extra) if extra else "")
        lines.append(f"| {r['mex']} | {r['case']} | {r['build']} | {r.get('verdict', '')} | {spikes} | {text} | "
                     f"{r['seconds_original']}, {r['seconds_ours']} |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"cpu": cpu, "cores": __import__("os").cpu_count(), "g++": gxx,
            "python": platform.python_version(), "numpy": np.__version__}


def _select(cases: list[Case], a) -> tuple[list[tuple[Case, str]], list[str]]:
    """(case, checkout) pairs to run, and a message per mex skipped for want of its checkout."""
    if a.only:
        cases = [c for c in cases if c.mex in a.only.split(",")]
    run, skipped = [], {}
    for c in cases:
        ks25 = c.mex in KS25_MEX
        checkout = a.checkout_ks25 if ks25 else a.checkout
        if checkout is None:
            flag = "--checkout-ks25 <Kilosort 2.5 checkout>" if ks25 else "--checkout <Kilosort v2.0 checkout>"
            skipped[c.mex] = f"{c.mex}: skipped (its .cu file comes from {flag}, not given)"
        else:
            run.append((c, checkout))
    return run, list(skipped.values())


def _merged(rows: list[dict], out: Path, rerun: set) -> list[dict]:
    """The rows of an existing ``out`` file, those of the mex in ``rerun`` replaced by ``rows``;
    unfused rows first, then FMA rows, each in their earlier order."""
    old = json.loads(out.read_text())["rows"] if out.is_file() else []
    kept = [r for r in old if r["mex"] not in rerun] + rows
    return sorted(kept, key=lambda r: r["build"] == "fma")  # stable


def main(argv=None) -> int:
    from original_kernels.executor import kind, set_schedule

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", help="Kilosort v2.0 checkout (holds CUDA/); without it the "
                    "v2.0 mex rows are skipped")
    ap.add_argument("--checkout-ks25", help="Kilosort 2.5 checkout (holds CUDA/spikedetector3.cu); "
                    "without it the spikedetector3 rows are skipped")
    ap.add_argument("--quick", action="store_true", help="leave out the full-size mexMPnu8 batches")
    ap.add_argument("--fma", action="store_true", help="also run the FMA build (nvcc's default)")
    ap.add_argument("--schedule", default="forward",
                    help="executor thread/block order: forward, reverse or random:SEED")
    ap.add_argument("--only", default="", help="comma-separated mex names")
    ap.add_argument("--merge", action="store_true", help="with --only: keep the other mex's rows "
                    "of an existing --out file (the rerun mex's rows are replaced)")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    a = ap.parse_args(argv)
    if a.checkout is None and a.checkout_ks25 is None:
        ap.error("give --checkout and/or --checkout-ks25")
    if a.merge and not a.only:
        ap.error("--merge replaces the rows of the --only mex: give --only")
    set_schedule(a.schedule)
    selected, skipped = _select(captured_cases() + synthetic_cases(a.quick), a)
    for msg in skipped:
        print(msg, file=sys.stderr, flush=True)
    rows = []
    t0 = time.perf_counter()
    for fma in ([False, True] if a.fma else [False]):
        for case, checkout in selected:
            row = compare_case(case, checkout, fma=fma)
            row["schedule"] = a.schedule
            row["verdict"] = verdict(row)
            rows.append(row)
            print(f"{row['mex']:15s} {row['case']:32s} {row['build']:6s} {row['verdict']:24s} "
                  f"{summary(row)}", flush=True)
    total = time.perf_counter() - t0
    flags = [f for f, on in (("--quick", a.quick), ("--fma", a.fma)) if on]
    if a.schedule != "forward":
        flags.append(f"--schedule {a.schedule}")
    if a.only:
        flags.append(f"--only {a.only}")
    checkouts = [f"{flag} <{what}>" for flag, given, what in (
        ("--checkout", a.checkout, "Kilosort v2.0 checkout"),
        ("--checkout-ks25", a.checkout_ks25, "Kilosort 2.5 checkout")) if given]
    command = " ".join(["python matlab_reference/original_kernels/compare.py", *checkouts, *flags])
    this_run = {"command": command, "seconds_total": round(total, 1), "rows": len(rows),
                "skipped": skipped}
    out = Path(a.out)
    if a.merge:
        previous = json.loads(out.read_text()) if out.is_file() else {}
        rows = _merged(rows, out, set(a.only.split(",")))
        result = {**previous, "rows": rows}
        result["partial_runs"] = [r for r in previous.get("partial_runs", [])
                                  if r["command"] != command] + [this_run]
    else:
        result = {"command": command, "checkout": str(a.checkout),
                  "checkout_ks25": str(a.checkout_ks25), "executor": kind(),
                  "schedule": a.schedule, "seconds_total": round(total, 1), "skipped": skipped,
                  "rows": rows}
    result.update(machine=machine(), tolerances={
        "fast_mode_dWU0_rel": FAST_DWU_REL, "fma_rel": FMA_REL,
        "fma_rel_override": {"/".join(k): v for k, v in FMA_REL_OVERRIDE.items()},
        "fma_kkmax_tie_rel": FMA_KKMAX_TIE_REL})
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(rows))
    findings = [r for r in rows if r["verdict"].startswith("FINDING")]
    print(f"total {total:.0f} s; {len(rows)} rows, {len(findings)} findings; written {out}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
