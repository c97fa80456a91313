"""The input rez of the post-processing reference (ks2_postprocess_reference.m).

    python matlab_reference/postprocess_input.py WORK_DIR OUT.mat

Our pipeline (matlab_compat=True, Octave random stream) sorts ``rec32pp`` (32 channels, 10 units
firing 10-25 Hz, 60 s: every unit has more than the 300 spikes splits need) up to the end of
learnAndSolve8b; the rez is then perturbed so that every branch of the post-processing has work:

- merge bait: two of every five spikes of the largest template go to a copy of it (a new
  template with the same waveform): one neuron in two clusters, which find_merges must join (a
  cluster is only merged into a larger one, hence the unequal shares);
- split bait: the spikes of the template sharing the most PC channels with another one are given
  to that other one: two neurons in one cluster, which splitAllClusters must separate.

The rez is saved with MATLAB's conventions (1-based templates and indices, st3 n x 5, cProjPC
n x 3 x 32 single) for Octave, and read back by tests/test_postprocess_reference.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.io

from pykilosort import make_synthetic_recording, run
from pykilosort.export import st3_matrix

SPEC = dict(n_channels=32, n_units=10, duration_s=60.0, seed=303, firing_rate_range=(10.0, 25.0))


def learn_rez(work: Path) -> dict:
    rec = make_synthetic_recording(work / "rec32pp.bin", **SPEC)
    ctx = run(rec.bin_path, probe=rec.probe, dir_path=work, matlab_compat=True,
              random_stream="octave", stop_after="learn", device="cpu")
    it, p, d, probe = ctx.intermediate, ctx.params, ctx.derived, ctx.probe_good
    st3 = np.asarray(it.st3)
    return {
        "st3": st3_matrix(st3),
        "cProj": np.asarray(it.cProj, np.float32), "cProjPC": np.asarray(it.cProjPC, np.float32),
        "dWU": np.asarray(it.dWU, np.float64), "W": np.asarray(it.W, np.float64),
        "U": np.asarray(it.U, np.float64), "mu": np.asarray(it.mu, np.float64).reshape(-1, 1),
        "simScore": np.asarray(it.simScore, np.float32),
        "iNeigh": np.asarray(it.iNeigh, np.int32) + 1, "iNeighPC": np.asarray(it.iNeighPC, np.int32) + 1,
        "Wrot": np.asarray(it.Wrot, np.float64),
        "xc": probe.xc[:, None], "yc": probe.yc[:, None],
        "xcoords": probe.xc[:, None], "ycoords": probe.yc[:, None],
        "ops": {"fs": p.fs, "Th": np.array(p.Th, float), "AUCsplit": p.AUCsplit,
                "sigmaMask": p.sigmaMask, "nt0": float(p.nt0), "nt0min": float(d.nt0min),
                "Nchan": float(probe.Nchan), "NchanTOT": float(probe.NchanTOT),
                "chanMap": probe.chanMap[:, None] + 1.0, "scaleproc": p.scaleproc,
                "wPCA": np.asarray(it.wPCA, np.float32), "fbinary": str(rec.bin_path.name),
                "fproc": "temp_wh.dat"},
    }


def _append_template(rez: dict, src: int) -> int:
    """A copy of template ``src`` (0-based) as a new last template; returns its index."""
    new = rez["W"].shape[1]
    rez["W"] = np.concatenate([rez["W"], rez["W"][:, src:src + 1]], axis=1)
    rez["U"] = np.concatenate([rez["U"], rez["U"][:, src:src + 1]], axis=1)
    rez["dWU"] = np.concatenate([rez["dWU"], rez["dWU"][:, :, src:src + 1]], axis=2)
    rez["mu"] = np.concatenate([rez["mu"], rez["mu"][src:src + 1]])
    for k in ("iNeigh", "iNeighPC"):
        rez[k] = np.concatenate([rez[k], rez[k][:, src:src + 1]], axis=1)
    sim = rez["simScore"]
    grown = np.zeros((new + 1, new + 1), np.float32)
    grown[:new, :new] = sim
    grown[:new, new] = sim[:, src]
    grown[new, :new] = sim[src, :]
    grown[new, new] = sim[src, src]
    rez["simScore"] = grown
    return new


def perturb(rez: dict) -> dict:
    labels = rez["st3"][:, 1].astype(int) - 1
    counts = np.bincount(labels, minlength=rez["W"].shape[1])
    big = int(counts.argmax())
    twin = _append_template(rez, big)
    rows = np.flatnonzero(labels == big)
    rez["st3"][rows[np.arange(rows.size) % 5 < 2], 1] = twin + 1
    # split bait: the pair of other templates sharing the most PC channels
    pcs = rez["iNeighPC"] - 1
    best = (-1, None)
    for a in range(counts.size):
        for b in range(counts.size):
            if a != b and big not in (a, b) and counts[a] >= counts[b] > 0:
                shared = np.intersect1d(pcs[:, a], pcs[:, b]).size
                if shared > best[0]:
                    best = (shared, (a, b))
    a, b = best[1]
    rez["st3"][labels == b, 1] = a + 1
    rez["perturbation"] = {"merge_bait": np.array([big, twin]) + 1.0,
                           "split_bait": np.array([a, b]) + 1.0, "shared_pc_channels": best[0]}
    return rez


if __name__ == "__main__":
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    rez = perturb(learn_rez(work))
    scipy.io.savemat(out, {"rez": rez}, do_compression=True, oned_as="column")
    print(f"{out}: {rez['st3'].shape[0]} spikes, {rez['W'].shape[1]} templates, "
          f"perturbation {rez['perturbation']}")
