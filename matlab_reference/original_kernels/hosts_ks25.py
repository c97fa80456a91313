"""The host sequence of Kilosort 2.5's spikedetector3 mexFunction (v2.5.2, CUDA/spikedetector3.cu),
replayed in Python as hosts.py does for the v2.0 mex files (same conventions, same ``MexRun``).

It is a separate module because the file comes from another checkout (``--checkout-ks25``).
Comments cite the mexFunction's lines in the v2.5.2 file.
"""
from __future__ import annotations

import numpy as np

from .device import Gpu, u32
from .hosts import MexRun
from .translate import compile_mex

f4, f8, i4 = np.float32, np.float64, np.int32

# The classes the mex reads its inputs as (it reinterprets the gpuArray's memory: a double iC
# would be read as pairs of ints, so a wrong class is an error here, not a silent garbage run).
SPIKEDETECTOR3_CLASSES = ("double", "single", "single", "int32", "single", "single", "int32",
                          "single")


def _check_classes(args) -> None:
    for k, (a, want) in enumerate(zip(args, SPIKEDETECTOR3_CLASSES)):
        got = np.asarray(a).dtype
        if got != np.dtype({"double": f8, "single": f4, "int32": i4}[want]):
            raise TypeError(f"spikedetector3 argument {k + 1}: {got}, the mex reads {want}")


def run_spikedetector3(checkout, args, *, fma=False) -> MexRun:
    """``[dout, kkmax, st, cF] = spikedetector3(Params, dataRAW, wTEMP, iC-1, dist, v2, iC2-1,
    dist2)`` (mexFunction, lines 222-351); ``checkout``: a Kilosort 2.5 checkout."""
    k = compile_mex(checkout, "spikedetector3", fma=fma)
    Nthreads, maxFR = k.constants["Nthreads"], k.constants["maxFR"]
    _check_classes(args)
    Params, data, W, iC, dist, v2, iC2, dist2 = args
    P = np.asarray(Params, f8).ravel(order="F")
    NT, Nchan, Nnearest = u32(P, 0), u32(P, 1), u32(P, 3)                           # 234-237
    Nrank, NchanUp = u32(P, 4), u32(P, 7)                                           # 238-239
    g = Gpu()
    d_Params = g.params(P)                                                          # 242-243
    d_data, d_W, d_iC = g.from_mx(data), g.from_mx(W), g.from_mx(iC)               # 250-255
    d_dist, d_v2 = g.from_mx(dist), g.from_mx(v2)                                   # 256-259
    d_iC2, d_dist2 = g.from_mx(iC2), g.from_mx(dist2)                               # 260-263
    d_dout = g.zeros(NT * NchanUp, f4)                                              # 271-273, 283
    d_kkmax = g.zeros(NT * NchanUp, i4)                                             # 274-275, 285
    d_dfilt = g.zeros(NT * Nchan * Nrank, f4)                                       # 277, 286
    d_dmax = g.zeros(NT * NchanUp, f4)                                              # 278, 284
    d_st, d_cF = g.zeros(4 * maxFR, i4), g.zeros(Nnearest * maxFR, f4)              # 279-280, 287-288
    d_counter = g.zeros(2, i4)                                                      # 281, 289
    g.launch(k, "Conv1D", Nchan, Nthreads, (d_Params, d_data, d_W, d_dfilt))       # 292
    # sumChannels' iC2/dist parameters receive the channel neighbourhoods d_iC, d_dist
    g.launch(k, "sumChannels", (NT // Nthreads, NchanUp), Nthreads,                 # 295-296
             (d_Params, d_dfilt, d_dout, d_kkmax, d_iC, d_dist, d_v2))
    g.launch(k, "max1D", NchanUp, Nthreads, (d_Params, d_dout, d_dmax))            # 299
    g.launch(k, "maxChannels", (NT // Nthreads, NchanUp), Nthreads,                 # 304-305
             (d_Params, d_dout, d_dmax, d_iC, d_iC2, d_dist2, d_kkmax, d_dfilt, d_st,
              d_counter, d_cF))
    counter = int(g.get(d_counter)[0])                                              # 307
    minSize = min(maxFR, counter)                                                   # 312
    # sto and cF2 are MX_GPU_DO_NOT_INITIALIZE, then fully overwritten by the copies (313-324)
    d_sto, d_cF2 = g.malloc(4 * minSize, i4), g.malloc(Nnearest * minSize, f4)
    d_sto[:] = d_st[:4 * minSize]
    d_cF2[:] = d_cF[:Nnearest * minSize]
    outputs = [g.out(d_dout, (NT, NchanUp)), g.out(d_kkmax, (NT, NchanUp)),        # 327-330
               g.out(d_sto, (4, minSize)), g.out(d_cF2, (Nnearest, minSize))]
    return MexRun(outputs, {"counter": counter}, g.rejected, g.kernel_names())
