"""mexMPnu8's host sequence (Kilosort2 v2.0, CUDA/mexMPnu8.cu, mexFunction lines 816-1181),
replayed in Python over the original kernels compiled for the CPU.

Build configuration: as CUDA/mexGPUall.m builds it by default (enableStableMode = true):
ENABLE_STABLEMODE defined, ENSURE_DETERM not defined. So, per round, stable mode
(Params(17) = useStableMode > 0) runs subtract_spikes_v4 (double residual, atomicCAS) and
spaceFilterUpdate_v2; fast mode runs subtract_spikes (float atomicAdd) and spaceFilterUpdate;
after the rounds, stable mode sorts the spikes by time (cdp_simple_quicksort, redone on the host:
quicksort.py) so that average_snips sums dWU in time order; fast mode sums them in discovery
order (d_idx = 0, 1, ...).
"""
from __future__ import annotations

import numpy as np

from .device import Gpu, u32
from .hosts import MexRun
from .quicksort import cdp_simple_quicksort, sort_constants
from .translate import compile_mex

f4, f8, i4, u4, b1 = np.float32, np.float64, np.int32, np.uint32, np.bool_


def run_mexMPnu8(checkout, args, *, fma=False, sort_in_fast_mode=False) -> MexRun:
    """``[st0, id0, x0, featW, dWU0, drez, nsp0, featPC, vexp, errmsg] = mexMPnu8(Params,
    dataRAW, U, W, mu, iC-1, iW-1, UtU, iList-1, wPCA)``.

    internals: ``count`` (d_count: the spike total after each round, index 0 = before the
    first), ``round`` (the round that found each output spike), ``idx`` (average_snips' order).

    sort_in_fast_mode: a diagnostic departure from the original: sort by time before
    average_snips in fast mode too, so that dWU is summed in time order (to show that this order
    is the only source of a fast-mode difference in dWU)."""
    k = compile_mex(checkout, "mexMPnu8", fma=fma)
    c = k.constants
    Nthreads, maxFR, nmaxiter = c["Nthreads"], c["maxFR"], c["nmaxiter"]
    Params, draw, U, W, mu, iC, iW, UtU, iList, wPCA = args
    P = np.asarray(Params, f8).ravel(order="F")
    # 829-836
    NT, Nfilt, nt0, Nnearest = u32(P, 0), u32(P, 1), u32(P, 4), u32(P, 5)
    Nrank, NchanU, Nchan, useStableMode = u32(P, 6), u32(P, 10), u32(P, 9), u32(P, 16)
    g = Gpu()
    d_Params = g.params(P)                                                          # 839-840
    d_draw = g.from_mx(draw)                                                        # 853 (a copy: modified)
    d_U, d_W, d_mu = g.from_mx(U), g.from_mx(W), g.from_mx(mu)                      # 855-860
    d_iC, d_iW, d_UtU = g.from_mx(iC), g.from_mx(iW), g.from_mx(UtU, b1)            # 861-866
    d_iList, d_wPCA = g.from_mx(iList), g.from_mx(wPCA)                             # 867-870
    # 872-928: every buffer cleared (cudaMemset, 897-928) except as noted
    d_nsp = g.zeros(Nfilt, i4)
    d_dWU = g.zeros(nt0 * Nchan * Nfilt, f8)
    d_dout = g.malloc(2 * NT * Nfilt, f4)  # allocated 2 NT Nfilt (880), the first NT Nfilt cleared (899)
    d_dout[:NT * Nfilt] = 0
    d_data = g.zeros(NT * Nfilt * Nrank, f4)
    d_err, d_ftype, d_eloss = g.zeros(NT, f4), g.zeros(NT, i4), g.zeros(NT, f4)
    d_st, d_id = g.zeros(maxFR, i4), g.zeros(maxFR, i4)
    d_x, d_y, d_z = g.zeros(maxFR, f4), g.zeros(maxFR, f4), g.zeros(maxFR, f4)
    d_counter, d_count = g.zeros(2, i4), g.zeros(nmaxiter, i4)
    d_feat = g.zeros(maxFR * Nnearest, f4)
    d_featPC = g.zeros(maxFR * NchanU * Nrank, f4)
    counter = [0, 0]                                                                # 911-912 (calloc)
    d_idx, d_stSort = g.zeros(maxFR, u4), g.zeros(maxFR, u4)                        # 919-928
    tpF, tpS, tpPC = (16, Nnearest), (nt0, 16), (NchanU, Nrank)                     # 931
    win = 2 * nt0 - 1

    def launch(name, grid, block, *a):
        g.launch(k, name, grid, block, a)

    launch("spaceFilter", Nfilt, Nthreads, d_Params, d_draw, d_U, d_iC, d_iW, d_data)   # 934
    launch("timeFilter", Nfilt, Nthreads, d_Params, d_data, d_W, d_dout)                # 937
    launch("bestFilter", NT // Nthreads, Nthreads,                                      # 940
           d_Params, d_dout, d_mu, d_err, d_eloss, d_ftype)
    d_draw64 = None
    if useStableMode:                                                               # 946-952
        d_draw64 = g.malloc(NT * Nchan, f8)
        launch("convToDouble", 100, Nthreads, d_Params, d_draw, d_draw64)
    for r in range(int(P[3])):                                                      # 954: Params[3] rounds
        launch("cleanup_spikes", NT // Nthreads, Nthreads, d_Params, d_dout, d_mu, d_err,   # 956-957
               d_eloss, d_ftype, d_st, d_id, d_x, d_y, d_z, d_counter)
        counter = [int(v) for v in g.get(d_counter)]                                # 960
        if counter[0] > maxFR:                                                      # 965-968
            counter[0] = maxFR
            d_counter[0] = maxFR
        if P[12] > 1:                                                               # 972-973
            launch("extractFEAT", 64, tpF, d_Params, d_st, d_id, d_counter, d_dout, d_iList,
                   d_mu, d_feat)
        if useStableMode:                                                           # 1013-1018
            launch("subtract_spikes_v4", Nfilt, tpS, d_Params, d_st, d_id, d_y, d_counter,
                   d_draw64, d_W, d_U)
            launch("spaceFilterUpdate_v2", Nfilt, win, d_Params, d_draw64, d_U, d_UtU, d_iC,
                   d_iW, d_data, d_st, d_id, d_counter)
        else:                                                                       # 1019-1026
            launch("subtract_spikes", Nfilt, tpS, d_Params, d_st, d_id, d_y, d_counter, d_draw,
                   d_W, d_U)
            launch("spaceFilterUpdate", Nfilt, win, d_Params, d_draw, d_U, d_UtU, d_iC, d_iW,
                   d_data, d_st, d_id, d_counter)
        launch("timeFilterUpdate", Nfilt, win, d_Params, d_data, d_W, d_UtU, d_dout,    # 1032-1033
               d_st, d_id, d_counter)
        if counter[0] - counter[1] > 0:                                             # 1037-1040
            launch("bestFilterUpdate", counter[0] - counter[1], win, d_Params, d_dout, d_mu,
                   d_err, d_eloss, d_ftype, d_st, d_id, d_counter)
        d_count[r + 1] = d_counter[0]                                               # 1044
        d_counter[1] = d_counter[0]                                                 # 1049
    if useStableMode:                                                               # 1053-1056
        launch("convToSingle", 100, Nthreads, d_Params, d_draw64, d_draw)
    if P[12] > 0:                                                                   # 1060-1062
        launch("computePCfeatures", Nfilt, tpPC, d_Params, d_counter, d_draw, d_st, d_id, d_y,
               d_W, d_U, d_mu, d_iW, d_iC, d_wPCA, d_featPC)
    g.launch(k, "set_idx", 1, 1, (d_idx, np.uint32(counter[0])))                   # 1068
    if useStableMode or sort_in_fast_mode:                                          # 1070-1077 (ENABLE_STABLEMODE)
        n = counter[0]
        d_stSort[:n] = d_st[:n].astype(u4)  # cudaMemcpy of the int bits as unsigned (st >= 0)
        data, idx = g.get(d_stSort), g.get(d_idx)
        cdp_simple_quicksort(data, idx, 0, n - 1, 0, *sort_constants(checkout))
        d_stSort[:] = g.cp.asarray(data)
        d_idx[:] = g.cp.asarray(idx)
    launch("average_snips", Nfilt, tpS, d_Params, d_st, d_idx, d_id, d_x, d_y, d_counter,  # 1084-1085
           d_draw, d_W, d_U, d_dWU, d_nsp, d_mu, d_z)
    minSize = counter[0] if counter[0] < maxFR else maxFR                           # 1089-1091
    outputs = [                                                                     # 1092-1120
        g.out(d_st, (minSize, 1)), g.out(d_id, (minSize, 1)),
        g.out(d_y, (minSize, 1)),                      # x0 = d_y: the amplitude
        g.out(d_feat, (Nnearest, minSize)),
        g.out(d_dWU, (nt0, Nchan, Nfilt)),
        g.out(d_draw, np.shape(draw)),
        g.out(d_nsp, (Nfilt, 1)),
        g.out(d_featPC, (NchanU, Nrank, minSize)),
        g.out(d_x, (minSize, 1)),                      # vexp = d_x: sqrt of the score
        np.zeros((1, 1), i4),  # errmsg (1127-1142): 0, since ENABLE_STABLEMODE is compiled in
    ]
    count = g.get(d_count, int(P[3]) + 1)
    rounds = np.searchsorted(count, np.arange(minSize), side="right").astype(i4) - 1
    return MexRun(outputs, {"count": count, "round": rounds, "idx": g.get(d_idx, minSize)},
                  g.rejected, g.kernel_names())
