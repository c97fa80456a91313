"""The host sequences of six mexFunctions (Kilosort2 v2.0, CUDA/<mex>.cu), replayed in Python.

Each ``run_<mex>(checkout, args)`` takes the MATLAB arguments (Params first) and does what the
mexFunction does, in the same order: the Params entries read with the same casts, the same
buffers and initialisation (cudaMemset / uninitialised cudaMalloc), the same launches (grid,
block) and the same output extraction. Comments cite the mexFunction's lines in the v2.0 file.
mexMPnu8 is in host_mpnu8.py.

Returns a ``MexRun``: the outputs in the mex's order and MATLAB dimensions, plus internal
buffers the comparison uses (e.g. mexThSpkPC's spike times, which the mex does not return).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .device import Gpu, i32, u32
from .translate import compile_mex

f4, f8, i4, b1 = np.float32, np.float64, np.int32, np.bool_


@dataclass
class MexRun:
    outputs: list
    internals: dict = field(default_factory=dict)
    rejected: list = field(default_factory=list)
    kernels: list = field(default_factory=list)  # the kernels launched, in first-launch order


def run_mexThSpkPC(checkout, args, *, fma=False) -> MexRun:
    """``[uS, idchan] = mexThSpkPC(Params, dataRAW, wPCA, iC-1)`` (mexFunction, lines 205-309)."""
    k = compile_mex(checkout, "mexThSpkPC", fma=fma)
    Nthreads, maxFR = k.constants["Nthreads"], k.constants["maxFR"]
    Params, data, W, iC = args
    P = np.asarray(Params, f8).ravel(order="F")
    NT, Nchan, NchanNear, NrankPC = u32(P, 0), u32(P, 1), u32(P, 2), u32(P, 6)  # 216-220
    g = Gpu()
    d_Params = g.params(P)                                                          # 222-223
    d_data, d_W, d_iC = g.from_mx(data), g.from_mx(W), g.from_mx(iC)               # 233-238
    d_dout, d_dmax = g.zeros(NT * Nchan, f4), g.zeros(NT * Nchan, f4)               # 244-255
    d_st, d_id, d_counter = g.zeros(maxFR, i4), g.zeros(maxFR, i4), g.zeros(2, i4)
    g.launch(k, "Conv1D", Nchan, Nthreads, (d_Params, d_data, d_W, d_dout))         # 260
    g.launch(k, "max1D", Nchan, Nthreads, (d_Params, d_dout, d_dmax))               # 263
    g.launch(k, "maxChannels", NT // Nthreads, Nthreads,                            # 268
             (d_Params, d_dout, d_dmax, d_iC, d_st, d_id, d_counter))
    counter = int(g.get(d_counter)[0])                                              # 270
    minSize = min(maxFR, counter)                                                   # 273-274
    d_featPC = g.zeros(NrankPC * NchanNear * minSize, f4)                           # 276-279
    d_id2 = g.malloc(minSize, i4)                                                   # 281-283
    if minSize > 0:                                                                 # 285-287
        g.launch(k, "computeProjections", minSize, (NchanNear, NrankPC),
                 (d_Params, d_data, d_iC, d_st, d_id, d_W, d_featPC))
    d_id2[:minSize] = d_id[:minSize]                                                # 289
    outputs = [g.out(d_featPC, (NrankPC * NchanNear, minSize)),                     # 294-295
               g.out(d_id2, (minSize, 1))]
    return MexRun(outputs, {"st": g.get(d_st, minSize), "counter": counter}, g.rejected, g.kernel_names())


def run_mexGetSpikes2(checkout, args, *, fma=False) -> MexRun:
    """``[dWU, cmap] = mexGetSpikes2(Params, data, wTEMP, iC-1)`` (mexFunction, lines 280-414)."""
    k = compile_mex(checkout, "mexGetSpikes2", fma=fma)
    Nthreads, maxFR = k.constants["Nthreads"], k.constants["maxFR"]
    Params, data, W, iC = args
    P = np.asarray(Params, f8).ravel(order="F")
    NT, Nchan, nt0, Nrank = u32(P, 0), u32(P, 9), u32(P, 4), u32(P, 14)            # 292-296
    tpS = (nt0, 16)                                                                 # 298
    g = Gpu()
    d_Params = g.params(P)                                                          # 300-301
    d_data, d_W, d_iC = g.from_mx(data), g.from_mx(W), g.from_mx(iC)               # 308-313
    d_dout = g.zeros(NT * Nchan, f4)                                                # 320-322, 338
    d_dfilt = g.zeros(Nrank * NT * Nchan, f4)                                       # 325-348
    d_err, d_kkmax = g.zeros(NT, f4), g.zeros(Nchan * NT, i4)
    d_kk, d_ftype = g.zeros(NT, i4), g.zeros(NT, i4)
    d_st, d_id, d_x = g.zeros(maxFR, i4), g.zeros(maxFR, i4), g.zeros(maxFR, f4)
    d_st1, d_id1, d_counter = g.zeros(maxFR, i4), g.zeros(maxFR, i4), g.zeros(2, i4)
    g.launch(k, "Conv1D", Nchan, Nthreads, (d_Params, d_data, d_W, d_dfilt))       # 354
    g.launch(k, "sumChannels", NT // Nthreads, Nthreads,                            # 357
             (d_Params, d_dfilt, d_dout, d_kkmax, d_iC))
    g.launch(k, "bestFilter", NT // Nthreads, Nthreads,                             # 360
             (d_Params, d_dout, d_err, d_ftype, d_kkmax, d_kk))
    g.launch(k, "cleanup_spikes", NT // Nthreads, Nthreads,                         # 363-364
             (d_Params, d_err, d_ftype, d_x, d_st, d_id, d_counter))
    g.launch(k, "cleanup_heights", 1 + maxFR // 32, 32,                             # 367
             (d_Params, d_x, d_st, d_id, d_st1, d_id1, d_counter))
    counter = int(g.get(d_counter)[1]) % 2 ** 32                                    # 370 (unsigned)
    counter = min(maxFR, counter)                                                   # 372
    d_WU = g.zeros(counter * nt0 * Nchan, f4)                                       # 374-375
    d_WU1 = g.malloc(nt0 * Nchan * counter, f4)                                     # 379-381
    g.launch(k, "extract_snips", Nchan, tpS, (d_Params, d_st1, d_id1, d_counter, d_data, d_WU))  # 385
    if counter > 0:                                                                 # 387-388
        d_WU1[:] = d_WU
    outputs = [g.out(d_WU1, (nt0, Nchan, counter)), g.out(d_dout, (NT, Nchan))]    # 391-392
    internals = {"st": g.get(d_st1, counter), "channel": g.get(d_id1, counter)}
    return MexRun(outputs, internals, g.rejected, g.kernel_names())


def run_mexSVDsmall2(checkout, args, *, fma=False, lockstep=True) -> MexRun:
    """``[W, U, mu] = mexSVDsmall2(Params, dWU, W, iC-1, iW-1, Ka, Kb)`` (lines 280-372).
    lockstep=False: without reNormalize's lockstep barrier (translate.LOCKSTEP_PATCHES)."""
    k = compile_mex(checkout, "mexSVDsmall2", fma=fma, lockstep=lockstep)
    Nthreads = k.constants["Nthreads"]
    Params, dWU, W, iC, iW, A, B = args
    P = np.asarray(Params, f8).ravel(order="F")
    Nfilt, nt0, Nrank, Nchan = u32(P, 1), u32(P, 4), u32(P, 6), u32(P, 9)          # 291-295
    g = Gpu()
    d_Params = g.params(P)                                                          # 297-298
    d_dWU, d_iC, d_iW = g.from_mx(dWU), g.from_mx(iC), g.from_mx(iW)               # 307-312
    d_A, d_B = g.from_mx(A), g.from_mx(B)                                           # 314-317
    d_U = g.malloc(Nchan * Nfilt * Nrank, f8)                                       # 319-321
    d_mu = g.malloc(Nfilt, f8)
    d_W = g.from_mx(W)                                                              # 325-326 (copy, modified)
    d_wtw = g.zeros(nt0 * nt0 * Nfilt, f8)                                          # 333-337
    d_dWUb = g.zeros(nt0 * Nchan * Nfilt, f8)
    tpS, tpK = (nt0, Nthreads // nt0), (Nrank, Nthreads // Nrank)                   # 339
    g.launch(k, "blankdWU", Nfilt, tpS, (d_Params, d_dWU, d_iC, d_iW, d_dWUb))     # 341
    g.launch(k, "getwtw", Nfilt, tpS, (d_Params, d_dWUb, d_wtw))                   # 344
    g.launch(k, "getW", Nfilt, nt0, (d_Params, d_wtw, d_W))                        # 347
    g.launch(k, "getU", Nfilt, tpK, (d_Params, d_dWUb, d_W, d_U))                  # 350
    g.launch(k, "reNormalize", Nfilt, nt0, (d_Params, d_A, d_B, d_W, d_U, d_mu))   # 353
    outputs = [g.out(d_W, np.shape(W)), g.out(d_U, (Nchan, Nfilt, Nrank)),          # 355-357
               g.out(d_mu, (Nfilt, 1))]
    return MexRun(outputs, {}, g.rejected, g.kernel_names())


def run_mexWtW2(checkout, args, *, fma=False) -> MexRun:
    """``WtW = mexWtW2(Params, W1, W2, UtU)`` (mexFunction, lines 81-129)."""
    k = compile_mex(checkout, "mexWtW2", fma=fma)
    nblock = k.constants["nblock"]
    Params, W1, W2, UtU = args
    P = np.asarray(Params, f8).ravel(order="F")
    Nfilt, nt0 = u32(P, 1), u32(P, 9)                                               # 92-94
    g = Gpu()
    d_Params = g.params(P)                                                          # 96-97
    d_W1, d_W2, d_UtU = g.from_mx(W1), g.from_mx(W2), g.from_mx(UtU)               # 103-108
    d_WtW = g.malloc(Nfilt * Nfilt * (2 * nt0 - 1), f4)                             # 113-115
    grid = (1 + Nfilt // nblock, 1 + Nfilt // nblock)                               # 117-118
    g.launch(k, "crossFilter", grid, (nblock, nblock), (d_Params, d_W1, d_W2, d_UtU, d_WtW))  # 119
    return MexRun([g.out(d_WtW, (Nfilt, Nfilt, 2 * nt0 - 1))], {}, g.rejected, g.kernel_names())      # 121


def run_mexClustering2(checkout, args, *, fma=False) -> MexRun:
    """``[dWU, iclust, dx, nsp, dV] = mexClustering2(Params, uproj, W, mu, call-1, iMatch,
    iC-1)`` (mexFunction, lines 291-437)."""
    k = compile_mex(checkout, "mexClustering2", fma=fma)
    Params, uproj, W, mu, call, iMatch, iC = args
    P = np.asarray(Params, f8).ravel(order="F")
    Nspikes, Nfilters, NrankPC, Nchan = u32(P, 0), u32(P, 2), u32(P, 1), u32(P, 7)  # 303-307
    g = Gpu()
    d_Params = g.params(P)                                                          # 310-311
    d_uproj, d_W, d_mu = g.from_mx(uproj), g.from_mx(W), g.from_mx(mu)              # 321-333
    d_call, d_iMatch, d_iC = g.from_mx(call), g.from_mx(iMatch, b1), g.from_mx(iC)
    d_dWU = g.zeros(NrankPC * Nchan * Nfilters, f4)                                 # 336-338, 351
    # d_cmax is never cleared (345): computeCost writes only the (spike, template) pairs whose
    # channels match, yet all of it is returned as dV (416); the rest is whatever the memory held
    d_cmax = g.malloc(Nspikes * Nfilters, f4)                                       # 345
    d_id = g.malloc(Nspikes, i4)                                                    # 346
    # count_spikes reads x[tind] for tind < Nfilters (x is per spike: a bug whose value only
    # enters V, which is never returned); room for max(Nspikes, Nfilters) keeps the read inside
    # the allocation on the CPU
    d_x = g.malloc(max(Nspikes, Nfilters), f4)                                      # 347
    d_nsp = g.zeros(Nfilters, i4)                                                   # 348-350
    d_V = g.zeros(Nfilters, f4)                                                     # 354-355
    g.launch(k, "computeCost", Nfilters, 1024,                                      # 359-360
             (d_Params, d_uproj, d_mu, d_W, d_iMatch, d_iC, d_call, d_cmax))
    g.launch(k, "bestFilter", 40, 256, (d_Params, d_iMatch, d_iC, d_call, d_cmax, d_id, d_x))  # 363
    g.launch(k, "average_snips_v2", Nfilters, 1,                                    # 371
             (d_Params, d_iC, d_call, d_id, d_uproj, d_cmax, d_dWU))
    g.launch(k, "count_spikes", 7, 256, (d_Params, d_id, d_nsp, d_x, d_V))         # 390
    outputs = [g.out(d_dWU, (NrankPC * Nchan, Nfilters)), g.out(d_id, (Nspikes, 1)),  # 393-416
               g.out(d_x, (Nspikes, 1)), g.out(d_nsp, (Nfilters, 1)),
               g.out(d_cmax, (Nspikes, Nfilters))]
    return MexRun(outputs, {}, g.rejected, g.kernel_names())


def run_mexDistances2(checkout, args, *, fma=False) -> MexRun:
    """``[iclust, ds] = mexDistances2(Params, Ws, W, iMatch, iC-1, Whs-1, mus, mu)``
    (mexFunction, lines 99-187)."""
    k = compile_mex(checkout, "mexDistances2", fma=fma)
    Params, Ws, W, iMatch, iC, Wh, mus, mu = args
    P = np.asarray(Params, f8).ravel(order="F")
    Nspikes, Nfilters = i32(P, 0) % 2 ** 32, i32(P, 2) % 2 ** 32                    # 110-112
    g = Gpu()
    d_Params = g.params(P)                                                          # 115-116
    d_Ws, d_W, d_iMatch = g.from_mx(Ws), g.from_mx(W), g.from_mx(iMatch, b1)        # 125-139
    d_iC, d_Wh, d_mus, d_mu = g.from_mx(iC), g.from_mx(Wh), g.from_mx(mus), g.from_mx(mu)
    d_cmax = g.malloc(Nspikes * Nfilters, f4)                                       # 146-148
    d_id, d_x = g.malloc(Nspikes, i4), g.malloc(Nspikes, f4)
    g.launch(k, "computeCost", Nfilters, 1024,                                      # 151-152
             (d_Params, d_Ws, d_mus, d_W, d_mu, d_iMatch, d_iC, d_Wh, d_cmax))
    g.launch(k, "bestFilter", 40, 256, (d_Params, d_iMatch, d_Wh, d_cmax, d_mus, d_id, d_x))  # 155
    outputs = [g.out(d_id, (Nspikes, 1)), g.out(d_x, (Nspikes, 1))]                 # 158-169
    return MexRun(outputs, {}, g.rejected, g.kernel_names())
