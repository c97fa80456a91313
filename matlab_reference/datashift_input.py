"""The input of ks25_datashift_reference.m: a drifting synthetic recording, preprocessed by OUR
pipeline (Kilosort 2.5 geometry, matlab_compat) into a proc file for the original datashift2.

    python matlab_reference/datashift_input.py WORK_DIR OUT_MAT

WORK_DIR receives the recording, our run's context and ``proc_<case>.dat`` (a copy of the proc
file, which the Octave driver copies again before datashift2 rewrites it in place); OUT_MAT the
parameters datashift2 reads (ops, probe geometry), the proc file's path and its sha256. The proc
file itself (tens of MB) is not committed: tests/test_datashift_octave.py regenerates it with the
same functions and first checks its sha256, so a changed generator or preprocessing is reported
as stale references, not as a datashift regression.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import scipy.io

from pykilosort.utils import file_sha256

# One recording per drift kind; 64 channels (0..620 um: room for 5 non-rigid blocks), 20 s.
RECORDINGS = {
    "rigid": dict(drift="rigid", seed=2521),
    "nonrigid": dict(drift="nonrigid", seed=2522),
}
SYNTH = dict(n_channels=64, n_units=24, duration_s=20.0, drift_um=20.0,
             amplitude_range=(80.0, 220.0), firing_rate_range=(5.0, 20.0))
# KS2.5 batches of NT = 32*1024 - 64 (a multiple of 32 as our params want; 19 batches, the last
# one short); nskip 5: extractTemplatesfromSnippets reads batches 1, 6, 11, 16.
RUN = dict(NT=32 * 1024 - 64, ntbuff=64, nskip=5, spkTh=-6.0, sig=20.0, scaleproc=200.0,
           loc_range=(5, 4), long_range=(30, 6), genericSpkTh=8.0)


def recording(case: str, work: Path):
    from pykilosort.synthetic import make_synthetic_recording

    return make_synthetic_recording(work / f"{case}.bin", **SYNTH, **RECORDINGS[case])


def run_ours(case: str, work: Path, *, stop_after: str, **extra):
    """Our pipeline on the case's recording, matlab_compat, to ``stop_after``; the context."""
    from pykilosort import run
    from pykilosort.probes import load_probe

    rec_path = work / f"{case}.bin"
    if not rec_path.is_file():      # the generator is seeded: an existing file is the same
        recording(case, work)
    probe = load_probe(work / f"{case}_probe.json")
    return run(rec_path, probe=probe, dir_path=work / f"run_{case}", device="cpu",
               drift_correction=True, matlab_compat=True, stop_after=stop_after, **RUN, **extra)


def build_input(case: str, work: Path) -> dict:
    ctx = run_ours(case, work, stop_after="preprocess")
    probe, p, d = ctx.probe_good, ctx.params, ctx.derived
    src = Path(ctx.intermediate.proc)
    nbatch = int(ctx.intermediate.Nbatch)
    # shift_batch_on_disk2 and get_batch read at batch offsets: whole padded batches on disk
    assert src.stat().st_size == 2 * nbatch * p.NT * probe.Nchan
    proc = work / f"proc_{case}.dat"
    shutil.copyfile(src, proc)
    return {
        "proc_path": str(proc.resolve()), "proc_sha256": file_sha256(proc),
        "xc": np.asarray(probe.xc, np.float64)[:, None], "yc": np.asarray(probe.yc, np.float64)[:, None],
        "NT": float(p.NT), "ntbuff": float(p.ntbuff), "Nbatch": float(nbatch),
        "Nchan": float(probe.Nchan), "nt0": float(p.nt0), "nt0min": float(d.nt0min),
        "fs": float(p.fs), "scaleproc": p.scaleproc, "nskip": float(p.nskip), "spkTh": p.spkTh,
        "loc_range": np.asarray(p.loc_range, np.float64)[None, :],
        "long_range": np.asarray(p.long_range, np.float64)[None, :], "sig": p.sig,
    }


if __name__ == "__main__":
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    arrays = {case: build_input(case, work) for case in RECORDINGS}
    scipy.io.savemat(out, arrays, do_compression=True)
    for case, a in arrays.items():
        print(f"{case}: {a['proc_path']} Nbatch {int(a['Nbatch'])} sha256 {a['proc_sha256'][:12]}")
