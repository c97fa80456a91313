"""The input recordings of the MATLAB references: our synthetic generator with fixed seeds.

    python matlab_reference/recipe.py OUT_DIR      # writes rec32.bin, rec64.bin and chanMap .mat files

``inputs.json`` (committed beside the reference data) records each file's sha256, so a test can
tell a changed generator (references stale) from a changed port (a real regression).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import scipy.io

from pykilosort.synthetic import make_synthetic_recording

RECORDINGS = {
    # rec32: one dead (all-zero) channel, row 5
    "rec32": dict(n_channels=32, n_units=12, duration_s=10.0, seed=101, dead=(5,), unconnected=()),
    # rec64: channel row 9 marked unconnected in the channel map
    "rec64": dict(n_channels=64, n_units=24, duration_s=10.0, seed=202, dead=(), unconnected=(9,)),
}


def make_input(name: str, folder: Path) -> dict:
    """Write ``<name>.bin`` and ``<name>_chanMap.mat`` (1-based, Kilosort format); return facts."""
    spec = RECORDINGS[name]
    folder.mkdir(parents=True, exist_ok=True)
    rec = make_synthetic_recording(folder / f"{name}.bin", n_channels=spec["n_channels"],
                                   n_units=spec["n_units"], duration_s=spec["duration_s"],
                                   seed=spec["seed"])
    if spec["dead"]:
        data = np.memmap(rec.bin_path, np.int16, mode="r+", shape=(rec.n_samples, spec["n_channels"]))
        data[:, list(spec["dead"])] = 0
        data.flush()
        del data
    connected = np.ones(spec["n_channels"])
    connected[list(spec["unconnected"])] = 0
    probe = rec.probe
    scipy.io.savemat(folder / f"{name}_chanMap.mat", {
        "chanMap": (probe.chanMap + 1.0)[:, None], "chanMap0ind": probe.chanMap[:, None].astype(float),
        "xcoords": probe.xc[:, None], "ycoords": probe.yc[:, None],
        "kcoords": np.ones((probe.Nchan, 1)), "connected": connected[:, None],
        "NchanTOT": float(probe.NchanTOT), "fs": rec.fs}, do_compression=True)
    digest = hashlib.sha256(rec.bin_path.read_bytes()).hexdigest()
    return {"file": rec.bin_path.name, "sha256": digest, "n_samples": rec.n_samples,
            "NchanTOT": probe.NchanTOT, **{k: list(v) if isinstance(v, tuple) else v
                                            for k, v in spec.items()}}


def make_inputs(folder) -> dict:
    folder = Path(folder)
    return {name: make_input(name, folder) for name in RECORDINGS}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "matlab_reference/inputs")
    facts = make_inputs(out)
    (out / "inputs.json").write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts, indent=1))
