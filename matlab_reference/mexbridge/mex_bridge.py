"""Python side of mex_bridge.m: compute one Kilosort2 mex call with pykilosort's kernels.

    python3 mex_bridge.py NAME IN.mat OUT.mat

IN.mat holds the MATLAB arguments a1..aN (a1 = Params); OUT.mat receives the outputs o1..oM.
With MEX_CAPTURE_DIR set, every call's Params and shapes are appended to calls.json there, and
the calls chosen by KEEP are saved whole (inputs and outputs) as NAME_INDEX.mat test fixtures.
A batch of whitened data (dataRAW = int16 / scaleproc) is stored as its int16 values when that
reproduces it exactly.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import scipy.io

from pykilosort.kernels.mex import array_digest, call_mex

SCALEPROC = 200.0  # ops.scaleproc of the drivers
BIG = 200_000  # outputs with more elements are kept as a digest


def _first_with_features(i, p, earlier):
    """mexMPnu8: the first learning call, and the first call asked for features (trackAndSort)."""
    return i == 1 or (p[12] > 0 and not any(r["params"][12] > 0 for r in earlier))


# which calls to keep whole: name -> predicate(index, Params, earlier calls of that name)
KEEP = {
    "mexThSpkPC": lambda i, p, e: i == 1,
    "mexClustering2": lambda i, p, e: i in (1, 10),       # first and last k-means step, batch 1
    "mexDistances2": lambda i, p, e: i == 1,
    "mexGetSpikes2": lambda i, p, e: i == 1,              # first learning batch: raw data
    "mexSVDsmall2": lambda i, p, e: i in (1, 2),          # cold and warm start
    "mexMPnu8": _first_with_features,
    "mexWtW2": lambda i, p, e: i == 1,
    "spikedetector3": lambda i, p, e: i == 1,
}


def load_args(path: Path) -> list:
    m = scipy.io.loadmat(path, squeeze_me=False)
    n = sum(1 for k in m if k.startswith("a") and k[1:].isdigit())
    return [m[f"a{k}"] for k in range(1, n + 1)]


def compact(key: str, a) -> dict:
    """{key: a}, or {key_int16, key_scale} when a float32 batch is int16 / SCALEPROC exactly."""
    a = np.asarray(a)
    if a.dtype == np.float32 and a.ndim == 2 and a.size > 100000:
        q = np.round(a.astype(np.float64) * SCALEPROC)
        if np.abs(q).max() < 32768:
            q16 = q.astype(np.int16)
            if np.array_equal(q16.astype(np.float32) / np.float32(SCALEPROC), a):
                return {f"{key}_int16": q16, f"{key}_scale": SCALEPROC}
    return {key: a}


def output_or_digest(key: str, o) -> dict:
    """{key: o}; for a large output (a batch-sized residual or cmap), its shape and sha256."""
    o = np.asarray(o)
    if o.size <= BIG:
        return {key: o}
    return {f"{key}_sha256": array_digest(o), f"{key}_shape": np.array(o.shape, dtype=np.int64)}


def record(capture: Path, name: str, args: list, outs: list) -> None:
    log_path = capture / "calls.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else []
    earlier = [r for r in log if r["name"] == name]
    index = 1 + len(earlier)
    params = np.asarray(args[0], dtype=np.float64).ravel()
    keep = KEEP[name](index, params, earlier)
    log.append({"name": name, "index": index, "params": params.tolist(), "kept": bool(keep),
                "inputs": [list(np.shape(a)) for a in args],
                "outputs": [list(np.shape(o)) for o in outs]})
    if keep:
        fixture = {"name": name, "index": index}
        for k, a in enumerate(args, start=1):
            fixture.update(compact(f"a{k}", a))
        for k, o in enumerate(outs, start=1):
            fixture.update(output_or_digest(f"o{k}", o))
        scipy.io.savemat(capture / f"{name}_{index}.mat", fixture, do_compression=True,
                         oned_as="column")
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(log, indent=0))
    os.replace(tmp, log_path)


def main(name: str, fin: str, fout: str) -> None:
    args = load_args(Path(fin))
    outs = call_mex(name, args)  # spikedetector3 too (call_mex's KS25_MEX_FUNCTIONS)
    scipy.io.savemat(fout, {f"o{k}": np.asarray(o) for k, o in enumerate(outs, start=1)},
                     oned_as="column")
    capture = os.environ.get("MEX_CAPTURE_DIR")
    if capture:
        record(Path(capture), name, args, outs)


if __name__ == "__main__":
    main(*sys.argv[1:4])
