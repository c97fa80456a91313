"""The input of ks25_shift_reference.m: a Kilosort 2.5 proc file written by OUR pipeline, plus
seeded drift estimates for shift_batch_on_disk2 to register it with.

    python matlab_reference/shift_input.py WORK_DIR OUT_MAT

The proc file comes from ``pykilosort.run(..., drift_correction=True, stop_after="preprocess")``
on rec32 of recipe.py, cut short (trange) and in small batches so that the fixture stays well
under a megabyte or two; the registration only needs realistic whitened int16 data, several
batches (the dprev chain) and a padded last batch. The drifts are not align_block2's estimates
(that is ks25_align_reference.m's business) but seeded non-integer values of a few to ~30 um that
change from batch to batch and from block to block, so that every term of the kriging matrix and
of the makima interpolation is exercised.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.io

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipe.py beside this file

NAME = "rec32"
NT = 2048 - 64          # KS2.5 geometry: NT = k*1024 - ntbuff; a multiple of 32 as params wants
NTBUFF = 64
TRANGE = [0.0, 0.4]     # 12000 samples: 7 batches, the last mostly padding
SIG = 20.0              # configFile384.m: ops.sig = 20
N_YBLK = 9              # align_block2 with ops.nblocks = 5 returns 2*5 - 1 block centres
SEED = 2511


def proc_file(*, work: Path):
    """Run our preprocessing (KS2.5 geometry) on rec32; return the context."""
    from pykilosort import run
    from pykilosort.probes import load_probe
    from recipe import make_input

    make_input(NAME, work / "inputs")
    probe = load_probe(work / "inputs" / f"{NAME}_chanMap.mat")
    return run(work / "inputs" / f"{NAME}.bin", probe=probe, dir_path=work / "run", device="cpu",
               drift_correction=True, stop_after="preprocess", NT=NT, ntbuff=NTBUFF, trange=TRANGE)


def block_centres(*, yc: np.ndarray, n: int) -> np.ndarray:
    """n block centres inside the probe's depth range, 10% of it short of each end (30 um on
    rec32), so that the channels beyond the first and last centre are extrapolated ('extrap'), as
    on a real probe, where align_block2's centres never reach the outermost sites."""
    lo, hi = float(yc.min()), float(yc.max())
    margin = 0.1 * (hi - lo)
    return np.linspace(lo + margin, hi - margin, n)


def rigid_drift(*, n_batch: int, rng: np.random.Generator) -> np.ndarray:
    """(n_batch, 1) drift in um, one value per batch, non-integer, |d| up to ~30 um."""
    return rng.uniform(-30, 30, size=(n_batch, 1))


def seeded_drift(*, n_batch: int, yblk: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_batch, len(yblk)) drift in um: a per-batch offset up to ~20 um, a per-batch tilt along
    the probe up to ~+-8 um, and per-block jitter of ~2 um (non-integer everywhere; up to ~30 um)."""
    offset = rng.uniform(-20, 20, size=(n_batch, 1))
    tilt = rng.uniform(-8, 8, size=(n_batch, 1))
    rel = (yblk - yblk.mean()) / (np.ptp(yblk) / 2)      # -1 .. 1 along the probe
    return offset + tilt * rel[None, :] + rng.normal(0, 2, size=(n_batch, yblk.size))


def build_input(*, work: Path) -> dict:
    ctx = proc_file(work=work)
    probe = ctx.probe_good
    n_chan, n_batch = probe.Nchan, ctx.derived.Nbatch
    proc = np.fromfile(ctx.intermediate.proc, np.int16)
    # shift_batch_on_disk2 reads NT (+ ntbuff) samples at batch offsets: whole batches on disk
    assert proc.size == n_batch * NT * n_chan, (proc.size, n_batch, NT, n_chan)
    rng = np.random.default_rng(SEED)
    yc = np.asarray(probe.yc, np.float64)
    yblk = block_centres(yc=yc, n=N_YBLK)
    return {
        # (NT*Nbatch, Nchan), channel fastest in the file: row-major (samples, channels)
        "proc": proc.reshape(n_batch * NT, n_chan),
        "xc": np.asarray(probe.xc, np.float64)[:, None], "yc": yc[:, None],
        "NT": float(NT), "ntbuff": float(NTBUFF), "Nbatch": float(n_batch), "sig": SIG,
        "dshift_rigid": rigid_drift(n_batch=n_batch, rng=rng),
        "yblk_rigid": np.array([[float(np.mean(yc))]]),
        "dshift": seeded_drift(n_batch=n_batch, yblk=yblk, rng=rng),
        "yblk": yblk[:, None],
    }


if __name__ == "__main__":
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    arrays = build_input(work=work)
    scipy.io.savemat(out, arrays, do_compression=True)
    print(f"{out}: proc {arrays['proc'].shape}, Nbatch {int(arrays['Nbatch'])}, "
          f"rigid |d| <= {np.abs(arrays['dshift_rigid']).max():.1f} um, "
          f"non-rigid |d| <= {np.abs(arrays['dshift']).max():.1f} um")
