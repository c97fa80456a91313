"""Read a captured mex call (data/mex/<mex>_<k>.mat, written by ks2_mex_capture.m): the mex name,
its MATLAB arguments a1.. (Params first; whitened batches are stored as int16 with their scale and
come back as their exact float32 values) and its stored outputs o1.. (an array, or
("sha256", digest, shape) where only a digest was kept)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_call(path: Path):
    """(name, arguments, outputs) of the captured call in ``path``."""
    import scipy.io

    m = scipy.io.loadmat(path)
    args, outs, k = [], [], 1
    while f"a{k}" in m or f"a{k}_int16" in m:
        if f"a{k}" in m:
            args.append(m[f"a{k}"])
        else:
            scale = np.float32(m[f"a{k}_scale"].item())
            args.append(m[f"a{k}_int16"].astype(np.float32) / scale)
        k += 1
    k = 1
    while f"o{k}" in m or f"o{k}_sha256" in m:
        outs.append(m[f"o{k}"] if f"o{k}" in m else ("sha256", m[f"o{k}_sha256"].item(),
                                                     tuple(m[f"o{k}_shape"].ravel())))
        k += 1
    return str(m["name"].item()), args, outs
