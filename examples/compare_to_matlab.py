"""Compare pykilosort's spikes with those of a MATLAB Kilosort2 run on the same recording.

    python examples/compare_to_matlab.py rec.bin chanMap.mat rez_fields.mat [--NT 65600] [--compat]

rez_fields.mat holds the MATLAB run's st3 (and optionally iorig), saved in a format scipy reads:
    st3 = rez.st3; iorig = rez.iorig; save('-v7', 'rez_fields.mat', 'st3', 'iorig')
Use the same parameters on both sides (NT, Th, ...). --compat reproduces the original's known bugs
(matlab_compat=True) and draws the random numbers as MATLAB/Octave does (random_stream='octave'),
which is what makes spike-for-spike agreement possible; see matlab_reference/README.md.
"""
import argparse
import json

import numpy as np
import scipy.io

from pykilosort import add_default_handler, run


def compare(ours: np.ndarray, theirs: np.ndarray, *, tolerance: int = 2) -> dict:
    """ours: our st3 record array; theirs: MATLAB's st3 (n, >= 5), 1-based templates and batches."""
    a, b = np.sort(ours["time"]), np.sort(theirs[:, 0])
    out = {"spikes_ours": int(a.size), "spikes_matlab": int(b.size),
           "templates_ours": int(np.unique(ours["template"]).size),
           "templates_matlab": int(np.unique(theirs[:, 1]).size)}
    if a.size and b.size:
        j = np.searchsorted(a, b)  # our nearest spike on either side of each of theirs
        lo, hi = a[np.clip(j - 1, 0, a.size - 1)], a[np.clip(j, 0, a.size - 1)]
        dist = np.minimum(np.abs(lo - b), np.abs(hi - b))
        out[f"matlab_spikes_within_{tolerance}_samples"] = float(np.mean(dist <= tolerance))
    if len(ours) == len(theirs):
        same = ((ours["time"] == theirs[:, 0]) & (ours["template"] + 1 == theirs[:, 1])
                & (ours["batch"] + 1 == theirs[:, 4]))
        out["rows_identical"] = float(np.mean(same))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("recording")
    ap.add_argument("chanmap")
    ap.add_argument("rez_fields")
    ap.add_argument("--NT", type=int, default=None)
    ap.add_argument("--compat", action="store_true")
    ap.add_argument("--dir", default=None, help="folder for pykilosort's intermediates")
    args = ap.parse_args(argv)
    params = {"NT": args.NT} if args.NT else {}
    if args.compat:
        params.update(matlab_compat=True, random_stream="octave")
    ctx = run(args.recording, probe=args.chanmap, dir_path=args.dir, stop_after="learn", **params)
    ref = scipy.io.loadmat(args.rez_fields)
    result = compare(ctx.intermediate.st3, ref["st3"])
    if "iorig" in ref:
        result["batch_order_identical"] = bool(np.array_equal(np.asarray(ctx.intermediate.iorig) + 1,
                                                              ref["iorig"].ravel()))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    add_default_handler("INFO")
    main()
